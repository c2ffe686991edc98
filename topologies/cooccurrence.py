"""Decayed co-occurrence embedding types (engagements -> decayed pair counts -> vectors)."""

from streamer.topology import TopologySpec

#: Wikipedia edit stream (JODIE): editors -> pages. Half-life in event seconds.
WIKI_COOC = TopologySpec(
    name="wiki-cooc",
    algorithm="cooc",
    params={"dim": 128, "half_life_s": 3 * 86_400.0, "seed": 7},
    version=1,
    description="Decayed co-occurrence (random indexing) over the engagements stream; "
    "user vectors co-embedded with items.",
)

#: The embedded demo (LastFM Asia follow graph, no event time: 1 s apart, so no decay).
DEMO_COOC = TopologySpec(
    name="demo-cooc",
    algorithm="cooc",
    params={"dim": 64, "half_life_s": 1e12, "seed": 7},
    version=1,
    description="Demo: LastFM Asia mutual follows as engagements.",
)
