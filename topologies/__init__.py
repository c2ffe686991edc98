"""Declared embedding types (explicit tuple, no autodiscovery; CONVENTIONS C12)."""

from streamer.topology import TopologySpec
from topologies.cooccurrence import DEMO_COOC, WIKI_COOC

TOPOLOGIES: tuple[TopologySpec, ...] = (WIKI_COOC, DEMO_COOC)

__all__ = ["TOPOLOGIES"]
