"""Online skip-gram (SGNS) embedding types (engagements -> sessions -> SGNS -> vectors)."""

from streamer.topology import TopologySpec

#: Wikipedia edit stream (JODIE): item2vec-style SGNS over each editor's recent pages.
#: ``max_gap_s`` is in event seconds: a gap longer than 6 h starts a new session. Users
#: are the decayed mean of their pages' vectors with a 1-day half-life (predict-then-learn
#: MRR on the last 15%: 0.684 with 1 day vs 0.592 with the learner's 7-day default;
#: tests/unit/test_wiki_quality.py).
WIKI_SGNS = TopologySpec(
    name="wiki-sgns",
    algorithm="sgns",
    params={"dim": 64, "window": 5, "max_gap_s": 6 * 3600.0, "negatives": 5,
            "user_half_life_s": 86_400.0, "seed": 7},
    version=1,
    description="Online skip-gram with negative sampling (item2vec over each user's recent "
    "engagement window, unigram^0.75 noise kept incrementally); users co-embedded with items.",
    benchmarks={"snapshot_every_event_s": 86_400.0, "tasks": ["stability"]},
)
