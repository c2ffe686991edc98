"""Declared embedding types (explicit tuple, no autodiscovery; CONVENTIONS C12).

Each type runs as its own worker process (``streamer worker --type T``: faust app and
consumer group ``streamer-T-v<n>``, RocksDB path ``<state_dir>/T.v<n>``, output topic
``embeddings.T.v<n>``), so several types can learn from one ``engagements`` stream.
"""

from streamer.topology import TopologySpec
from topologies.cooccurrence import DEMO_COOC, WIKI_COOC
from topologies.skipgram import WIKI_SGNS

TOPOLOGIES: tuple[TopologySpec, ...] = (WIKI_COOC, WIKI_SGNS, DEMO_COOC)

__all__ = ["TOPOLOGIES"]
