"""Decayed co-occurrence embedding types (engagements -> decayed pair counts -> vectors)."""

from streamer.topology import TopologySpec

#: Wikipedia edit stream (JODIE): editors -> pages. Half-lives in event seconds.
#: Scorer params chosen on the TGB validation split of Wikipedia (``streamer.bench.linkpred``,
#: batches of 200; test never used): 1-day counts (vectors and the popularity prior), a
#: 3-hour user-item affinity half-life and popularity weight 1.0 give validation MRR 0.762
#: against 0.754 with the previous 3-day / 1-day / 0.3 (a plateau: 0.760-0.762 for
#: affinity half-lives of 30 min-6 h and popularity weights 0.3-1.6).
WIKI_COOC = TopologySpec(
    name="wiki-cooc",
    algorithm="cooc",
    params={"dim": 128, "half_life_s": 86_400.0, "affinity_half_life_s": 3 * 3_600.0,
            "popularity_weight": 1.0, "seed": 7},
    # v2: the scorer params above (v1: 3-day / 1-day / 0.3); a v1 table is refused
    version=2,
    description="Decayed co-occurrence (random indexing) over the engagements stream; "
    "user vectors co-embedded with items.",
    # a snapshot per event-day (the stream spans 31 days), neighbour stability on each
    benchmarks={"snapshot_every_event_s": 86_400.0, "tasks": ["stability"]},
)

#: The embedded demo (LastFM Asia follow graph, no event time: 1 s apart, so no decay).
DEMO_COOC = TopologySpec(
    name="demo-cooc",
    algorithm="cooc",
    params={"dim": 64, "half_life_s": 1e12, "seed": 7},
    version=1,
    description="Demo: LastFM Asia mutual follows as engagements.",
    # country prediction and follow-Jaccard on the demo's own graph (in-sample: the
    # stream holds every edge; `streamer bench follow-jaccard` holds 20% out)
    benchmarks={"snapshot_every_events": 20_000, "snapshot_retain": 5,
                "tasks": ["stability", "metadata:lastfm-asia", "follow-jaccard:lastfm-asia"]},
)
