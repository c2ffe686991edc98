"""One index per entity kind, routed by id prefix (``u:`` users, ``i:`` items).

Users are co-embedded with items (DESIGN §3), so "given a user, find items" is one
query of the item index with the user's vector: ``knn(user_vector, k, kind="item")``.
With ``kind=None`` both kinds are searched and merged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest, StateError
from streamer.index.base import (
    FORMAT_VERSION,
    SPACE,
    IndexStats,
    Neighbours,
    VectorIndex,
    check_positive_int,
    load_index,
    read_manifest,
    validate_exclude,
    validate_ids,
    validate_k,
    validate_queries,
    validate_query,
    validate_vectors,
    write_manifest,
)
from streamer.types import EntityId, Matrix, Vector, entity_kind

Kind = Literal["user", "item"]
KINDS: tuple[Kind, ...] = ("user", "item")


def _kind_of(entity: EntityId, position: int) -> Kind:
    try:
        return entity_kind(entity)  # type: ignore[return-value]
    except ValueError as exc:
        msg = f"ids[{position}] = {entity!r} has no 'u:' or 'i:' prefix; expected a namespaced id"
        raise BadRequest(msg) from exc


def _check_kind(kind: object) -> Kind | None:
    if kind is None or kind in KINDS:
        return kind  # type: ignore[return-value]
    msg = f"kind must be 'user', 'item' or None, got {kind!r}"
    raise BadRequest(msg)


def _merge(parts: list[Neighbours], k: int) -> Neighbours:
    return sorted((p for part in parts for p in part), key=lambda p: -p[1])[:k]


class KindedIndex(VectorIndex):
    """A :class:`VectorIndex` holding one child index per entity kind.

    Parameters
    ----------
    dim
        Vector dimension shared by both kinds.
    factory
        Builds each child: ``factory(dim=dim) -> VectorIndex`` (a class such as
        ``HnswIndex`` or a ``functools.partial`` carrying its parameters). The factory
        decides about background maintenance, e.g.
        ``partial(HnswIndex, background=True)`` gives each kind its own maintenance
        thread; :meth:`close`, :meth:`wait_idle`, :meth:`fold` and :meth:`rebuild`
        are passed on to both children.

    Raises
    ------
    BadRequest
        (from the methods) an id without a ``u:``/``i:`` prefix, or a bad ``kind``.

    Notes
    -----
    Validation of a whole call (ids, prefixes, vectors) happens before any child
    changes, so a rejected call changes nothing.

    Thread safety: each child has its own readers-writer lock and the children's
    guarantees hold per kind. An upsert or delete spanning both kinds is applied kind
    by kind, so a concurrent ``knn(kind=None)`` may see the user half before the item
    half; single-kind queries always see a consistent child.

    Examples
    --------
    >>> import numpy as np
    >>> from streamer.index.exact import ExactIndex
    >>> idx = KindedIndex(2, factory=ExactIndex)
    >>> idx.upsert(["u:ann", "i:x", "i:y"], np.array([[1, 0], [1, 0.1], [0, 1]], np.float32))
    >>> user_vec = idx.get(["u:ann"])[0][0]
    >>> [e for e, _ in idx.knn(user_vec, k=1, kind="item")]
    ['i:x']
    """

    def __init__(self, dim: int, *, factory: Callable[..., VectorIndex]) -> None:
        self._dim = check_positive_int("dim", dim)
        self.factory = factory
        self._parts: dict[Kind, VectorIndex] = {kind: factory(dim=self._dim) for kind in KINDS}
        for kind, part in self._parts.items():
            if part.dim != self._dim:
                msg = f"factory built a {kind} index of dim {part.dim}, expected {self._dim}"
                raise StateError(msg)

    def __repr__(self) -> str:
        user, item = self._parts["user"], self._parts["item"]
        return f"KindedIndex(dim={self._dim}, user={user!r}, item={item!r})"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def part(self, kind: Kind) -> VectorIndex:
        """Return the child index of ``kind`` (``"user"`` or ``"item"``).

        Raises
        ------
        BadRequest
            Another kind.
        """
        checked = _check_kind(kind)
        if checked is None:
            msg = "part() needs kind 'user' or 'item', got None"
            raise BadRequest(msg)
        return self._parts[checked]

    def _split(self, keys: list[EntityId]) -> dict[Kind, list[int]]:
        positions: dict[Kind, list[int]] = {kind: [] for kind in KINDS}
        for j, entity in enumerate(keys):
            positions[_kind_of(entity, j)].append(j)
        return positions

    # ------------------------------------------------------------------ mutations

    def upsert(self, ids: Sequence[EntityId], vectors: Matrix) -> None:
        """Route each id to its kind's index; see :meth:`VectorIndex.upsert`.

        Raises
        ------
        BadRequest, DimensionMismatch, InvalidVector
            As :meth:`VectorIndex.upsert`, plus ids without a kind prefix.
        """
        keys = validate_ids(ids, unique=True)
        positions = self._split(keys)
        validate_vectors(keys, vectors, self._dim)
        raw = np.asarray(vectors)
        for kind, rows in positions.items():
            if rows:
                self._parts[kind].upsert([keys[j] for j in rows], raw[rows])

    def delete(self, ids: Collection[EntityId]) -> None:
        """Remove ids from their kind's index; unknown or unprefixed ids are ignored."""
        keys = validate_ids(ids, unique=False)
        for kind in KINDS:
            prefix = "u:" if kind == "user" else "i:"
            mine = [e for e in keys if e.startswith(prefix)]
            if mine:
                self._parts[kind].delete(mine)

    def fold(self) -> None:
        """Fold both children's buffers."""
        for part in self._parts.values():
            part.fold()

    def rebuild(self) -> None:
        """Rebuild both children."""
        for part in self._parts.values():
            part.rebuild()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until both children's background maintenance is idle (``timeout`` each).

        Raises
        ------
        StateError
            A child's maintenance thread died on an error.
        """
        return all([part.wait_idle(timeout) for part in self._parts.values()])

    def close(self) -> None:
        """Stop both children's background work; idempotent."""
        for part in self._parts.values():
            part.close()

    # ------------------------------------------------------------------ queries

    def knn(
        self,
        query: Vector,
        k: int,
        *,
        kind: Kind | None = None,
        exclude: Collection[EntityId] = (),
    ) -> Neighbours:
        """Nearest ids of one kind, or of both merged when ``kind`` is None.

        Parameters
        ----------
        query, k, exclude
            As :meth:`VectorIndex.knn`.
        kind
            ``"user"``, ``"item"`` or ``None`` (both).

        Raises
        ------
        BadRequest
            A bad ``kind`` (and as :meth:`VectorIndex.knn`).
        """
        which = _check_kind(kind)
        validate_query(query, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        if which is not None:
            return self._parts[which].knn(query, kk, exclude=skip)
        return _merge([part.knn(query, kk, exclude=skip) for part in self._parts.values()], kk)

    def knn_batch(
        self,
        queries: Matrix,
        k: int,
        *,
        kind: Kind | None = None,
        exclude: Collection[EntityId] = (),
    ) -> list[Neighbours]:
        """:meth:`knn` for each row of ``queries`` (shape ``(m, dim)``)."""
        which = _check_kind(kind)
        validate_queries(queries, self._dim)
        kk = validate_k(k)
        skip = validate_exclude(exclude)
        if which is not None:
            return self._parts[which].knn_batch(queries, kk, exclude=skip)
        answers = [part.knn_batch(queries, kk, exclude=skip) for part in self._parts.values()]
        return [_merge(list(rows), kk) for rows in zip(*answers, strict=True)]

    def get(self, ids: Collection[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return stored unit vectors and a presence mask (unprefixed ids are absent)."""
        keys = validate_ids(ids, unique=False)
        out = np.zeros((len(keys), self._dim), np.float32)
        mask = np.zeros(len(keys), np.bool_)
        for kind in KINDS:
            prefix = "u:" if kind == "user" else "i:"
            rows = [j for j, e in enumerate(keys) if e.startswith(prefix)]
            if rows:
                vectors, found = self._parts[kind].get([keys[j] for j in rows])
                out[rows] = vectors
                mask[rows] = found
        return out, mask

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts.values())

    def __contains__(self, entity: object) -> bool:
        if not isinstance(entity, str):
            return False
        try:
            kind = entity_kind(entity)
        except ValueError:
            return False
        return entity in self._parts[kind]  # type: ignore[index]

    def stats(self) -> IndexStats:
        """Sum of both children's counters."""
        return self._parts["user"].stats() + self._parts["item"].stats()

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path) -> None:
        """Save each child into ``path/user`` and ``path/item``, then ``path/manifest.json``.

        Raises
        ------
        OSError
            The directory cannot be written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for kind, part in self._parts.items():
            part.save(path / kind)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "kinded",
            "space": SPACE,
            "dim": self._dim,
            "parts": {kind: kind for kind in KINDS},
        }
        write_manifest(path, manifest)

    @classmethod
    def load(cls, path: Path, *, background: bool = False) -> KindedIndex:
        """Load both children (whatever their class) from a directory written by :meth:`save`.

        The loaded index keeps the children's own class as its factory; ``background``
        is passed on to the children's ``load``.

        Raises
        ------
        StateError
            Missing/foreign manifest, or a child of another dimension.
        """
        path = Path(path)
        manifest = read_manifest(path, "kinded")
        try:
            dim = int(manifest["dim"])
            parts = {kind: load_index(path / manifest["parts"][kind], background=background)
                     for kind in KINDS}
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"cannot load kinded index from {str(path)!r}: {exc}"
            raise StateError(msg) from exc
        for kind, part in parts.items():
            if part.dim != dim:
                msg = (f"kinded index at {str(path)!r}: {kind} part has dim {part.dim}, "
                       f"expected {dim}")
                raise StateError(msg)
        idx = cls.__new__(cls)
        idx._dim = dim
        idx.factory = type(parts["item"])
        idx._parts = parts
        return idx

    def _check_invariants(self) -> None:
        """Check both children's bookkeeping."""
        for part in self._parts.values():
            part._check_invariants()
