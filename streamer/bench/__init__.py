"""Benchmarks of embedding snapshots and drift detection (DESIGN §7).

Pure modules (no faust/kafka imports): :mod:`.embeddings` (the vectors a task reads),
:mod:`.linkpred` (TGB temporal link prediction), :mod:`.tasks` (topic, metadata,
follow-Jaccard, stability), :mod:`.drift` (river detectors + thresholds),
:mod:`.report` (HTML + PNG reports).
"""
