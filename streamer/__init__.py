"""streamer: streaming incremental embedding updater.

Kafka engagement events -> online embeddings (decayed co-occurrence, SGNS) ->
live HNSW index + RocksDB feature table -> neighbour queries.
"""

__version__ = "0.1.0"
