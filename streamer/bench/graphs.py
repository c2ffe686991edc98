"""Undirected friend/follow graphs for the follow-Jaccard task (DESIGN §7).

A :class:`FriendGraph` holds raw user ids (not namespaced) and a symmetric sparse
adjacency matrix; it answers Jaccard indices of friend sets and edge membership for
batches of node pairs, and splits off a seeded held-out edge set
(:meth:`FriendGraph.split`) that the offline runner keeps out of the stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from streamer.errors import BadRequest

__all__ = ["FriendGraph", "edge_key"]


def edge_key(a: str, b: str) -> tuple[str, str]:
    """Return the canonical key of the undirected edge ``{a, b}`` (string-sorted pair)."""
    return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class FriendGraph:
    """An undirected simple graph over raw user ids.

    Attributes
    ----------
    nodes
        ``n`` distinct raw user ids; node ``j`` is ``nodes[j]``.
    edges
        Shape ``(m, 2)`` int64 node indices, each undirected edge once with
        ``edges[:, 0] < edges[:, 1]``, sorted lexicographically.

    Raises
    ------
    BadRequest
        If an index is out of range, an edge is a self-loop or listed twice.

    Examples
    --------
    >>> g = FriendGraph.from_pairs([("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")])
    >>> g.jaccard(np.array([0]), np.array([1])).tolist()  # N(a)={b,c}, N(b)={a,c}
    [0.3333333333333333]
    """

    nodes: tuple[str, ...]
    edges: npt.NDArray[np.int64]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _adj: sp.csr_matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.nodes)
        e = np.asarray(self.edges, np.int64).reshape(-1, 2)
        if e.size and (e.min() < 0 or e.max() >= n):
            msg = f"edge node index out of range [0, {n})"
            raise BadRequest(msg)
        if np.any(e[:, 0] >= e[:, 1]):
            msg = "edges must be listed once with a < b (no self-loops)"
            raise BadRequest(msg)
        order = np.lexsort((e[:, 1], e[:, 0]))
        e = e[order]
        if len(e) > 1 and np.any(np.all(e[1:] == e[:-1], axis=1)):
            msg = "edges must be distinct"
            raise BadRequest(msg)
        index = {u: j for j, u in enumerate(self.nodes)}
        if len(index) != n:
            msg = "graph node ids must be distinct"
            raise BadRequest(msg)
        ones = np.ones(2 * len(e), np.float32)
        adj = sp.csr_matrix((ones, (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                            shape=(n, n))
        e.flags.writeable = False
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "edges", e)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_adj", adj)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]],
                   nodes: Iterable[str] = ()) -> FriendGraph:
        """Build a graph from raw-id pairs; self-loops dropped, repeats merged.

        Parameters
        ----------
        pairs
            ``(a, b)`` raw user ids, either direction.
        nodes
            Extra nodes (e.g. users without friends) to include.
        """
        index: dict[str, int] = {}
        for u in nodes:
            index.setdefault(u, len(index))
        keys: set[tuple[int, int]] = set()
        for a, b in pairs:
            if a == b:
                continue
            i, j = index.setdefault(a, len(index)), index.setdefault(b, len(index))
            keys.add((i, j) if i < j else (j, i))
        edges = np.array(sorted(keys), np.int64).reshape(-1, 2)
        return cls(tuple(index), edges)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def num_edges(self) -> int:
        """Number of undirected edges."""
        return int(len(self.edges))

    def index_of(self, ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Return node indices of raw ids, ``-1`` for ids not in the graph."""
        return np.fromiter((self._index.get(u, -1) for u in ids), np.int64)

    def degrees(self) -> npt.NDArray[np.int64]:
        """Return node degrees, shape ``(n,)`` int64."""
        return np.diff(self._adj.indptr).astype(np.int64)

    def has_edge(self, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Return whether ``{a[k], b[k]}`` is an edge, shape ``(len(a),)`` bool."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if len(a) == 0:
            return np.zeros(0, np.bool_)
        return np.asarray(self._adj[a, b]).ravel() > 0

    def jaccard(self, a: npt.NDArray[np.int64],
                b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Return the Jaccard index of the friend sets of ``a[k]`` and ``b[k]``.

        ``|N(a) ∩ N(b)| / |N(a) ∪ N(b)|`` with open neighbourhoods (a node is not its
        own friend), 0 when both sets are empty. Shape ``(len(a),)`` float64 in [0, 1].
        """
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        if len(a) == 0:
            return np.zeros(0, np.float64)
        inter = np.asarray(self._adj[a].multiply(self._adj[b]).sum(axis=1)).ravel()
        deg = self.degrees()
        union = deg[a] + deg[b] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return out.astype(np.float64)

    # ------------------------------------------------------------------ splits
    def without(self, edges: npt.NDArray[np.int64]) -> FriendGraph:
        """Return the graph on the same nodes minus ``edges`` (shape ``(k, 2)``, a < b)."""
        drop = {(int(i), int(j)) for i, j in np.asarray(edges, np.int64).reshape(-1, 2)}
        keep = [k for k, (i, j) in enumerate(self.edges.tolist()) if (i, j) not in drop]
        return FriendGraph(self.nodes, self.edges[keep])

    def split(self, frac: float = 0.2, seed: int = 0) -> tuple[FriendGraph, npt.NDArray[np.int64]]:
        """Hold out a seeded ``frac`` of the edges.

        Parameters
        ----------
        frac
            Fraction of edges held out, in ``(0, 1)``; ``round(frac * m)`` edges.
        seed
            Seed of ``numpy.random.default_rng`` choosing the edges (uniform, without
            replacement).

        Returns
        -------
        train, held_out
            The graph on the same nodes without the held-out edges, and the held-out
            edges, shape ``(k, 2)`` int64 node indices (a < b), sorted.

        Raises
        ------
        BadRequest
            If ``frac`` is not in ``(0, 1)``.
        """
        if not 0.0 < frac < 1.0:
            msg = f"held-out fraction must be in (0, 1), got {frac!r}"
            raise BadRequest(msg)
        m = self.num_edges
        pick = np.sort(np.random.default_rng(seed).choice(m, size=round(frac * m), replace=False))
        mask = np.ones(m, np.bool_)
        mask[pick] = False
        return FriendGraph(self.nodes, self.edges[mask]), self.edges[pick].copy()

    def edge_keys(self, edges: npt.NDArray[np.int64]) -> set[tuple[str, str]]:
        """Return ``{edge_key(raw a, raw b)}`` of index ``edges`` (to filter a stream)."""
        return {edge_key(self.nodes[i], self.nodes[j])
                for i, j in np.asarray(edges, np.int64).reshape(-1, 2).tolist()}
