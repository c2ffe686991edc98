"""The vector index interface, its shared validation and its manifest format (DESIGN §4).

Every index (the exact numpy twin, the hnswlib adaptor, the per-kind router) has the
same public API, defined by :class:`VectorIndex`, and validates its input with the
helpers below so the twins reject exactly the same calls with exactly the same errors
(CONVENTIONS C3).

Similarity is cosine: vectors are stored unit-normalised (float32) and scores are the
cosine similarity in ``[-1, 1]``, higher is closer.
"""

from __future__ import annotations

import abc
import json
import math
import numbers
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.errors import (
    BadRequest,
    ConfigError,
    DimensionMismatch,
    InvalidVector,
    StateError,
)
from streamer.types import EntityId, Matrix, Vector

FORMAT_VERSION = 1
"""Version of the on-disk layout written by ``save`` (bumped on incompatible changes)."""

MANIFEST = "manifest.json"
"""Name of the manifest file inside a saved index directory."""

SPACE = "cosine"
"""The only similarity space the indexes support."""

Neighbours = list[tuple[EntityId, float]]
"""``(id, cosine similarity)`` pairs, best first."""


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Counters of an index, for metrics, benchmarks and tests.

    Attributes
    ----------
    live
        Number of ids that have a vector (``len(index)``).
    graph
        Live ids whose vector sits in the ANN graph (0 for the exact index).
    delta
        Live ids whose vector sits in the exact delta buffer (all of them for the exact index).
    tombstones
        Deleted or superseded graph slots not yet dropped by a rebuild.
    capacity
        Slots allocated before the next growth (graph capacity for HNSW, rows for exact).
    """

    live: int
    graph: int
    delta: int
    tombstones: int
    capacity: int

    def __add__(self, other: IndexStats) -> IndexStats:
        return IndexStats(
            self.live + other.live,
            self.graph + other.graph,
            self.delta + other.delta,
            self.tombstones + other.tombstones,
            self.capacity + other.capacity,
        )


class VectorIndex(abc.ABC):
    """A mutable set of ``id -> unit vector`` answering cosine k-nearest-neighbour queries.

    Ids are non-empty strings; vectors are float32 rows of length :attr:`dim`, stored
    unit-normalised. All implementations share this exact API and the error behaviour
    of the module-level validators.

    Notes
    -----
    Thread safety: every implementation documents its own guarantees; the shipped ones
    allow any number of concurrent readers (``knn``, ``knn_batch``, ``get``, ``len``,
    ``in``, ``save``) with mutations serialised by a readers-writer lock.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Vector dimension (number of float32 components)."""

    @abc.abstractmethod
    def upsert(self, ids: Sequence[EntityId], vectors: Matrix) -> None:
        """Insert or replace the vectors of ``ids``; visible to the very next query.

        Parameters
        ----------
        ids
            ``n`` distinct non-empty string ids.
        vectors
            Shape ``(n, dim)``, any real dtype (converted to float32 after normalising).

        Raises
        ------
        BadRequest
            ``ids`` is not a sequence of non-empty strings, holds a duplicate, or its
            length differs from the number of rows.
        DimensionMismatch
            ``vectors`` is not of shape ``(n, dim)``.
        InvalidVector
            A row holds NaN or inf or has zero norm (the message names its id).

        The whole call is validated before anything changes: on error, nothing did.
        """

    @abc.abstractmethod
    def delete(self, ids: Sequence[EntityId]) -> None:
        """Remove ``ids``; ids that are not in the index are ignored.

        Raises
        ------
        BadRequest
            ``ids`` is not a sequence of strings.
        """

    @abc.abstractmethod
    def knn(
        self, query: Vector, k: int, *, exclude: Collection[EntityId] = ()
    ) -> Neighbours:
        """Return up to ``k`` ``(id, cosine similarity)`` pairs nearest to ``query``, best first.

        Parameters
        ----------
        query
            Shape ``(dim,)``, any real dtype; need not be normalised.
        k
            Neighbours wanted, ``>= 1``. Clamped to the live count minus the excluded
            live ids, so fewer (or none) come back when the index holds fewer.
        exclude
            Ids never to return (e.g. the query's own id, items already seen).

        Raises
        ------
        BadRequest
            ``k`` is not an integer ``>= 1``, or ``exclude`` is a bare string.
        DimensionMismatch
            ``query`` is not of shape ``(dim,)``.
        InvalidVector
            ``query`` holds NaN or inf or has zero norm.
        """

    @abc.abstractmethod
    def knn_batch(
        self, queries: Matrix, k: int, *, exclude: Collection[EntityId] = ()
    ) -> list[Neighbours]:
        """Run :meth:`knn` for every row of ``queries`` (shape ``(m, dim)``).

        Returns ``m`` lists, in row order. Raises as :meth:`knn`; an invalid row names
        its row number.
        """

    @abc.abstractmethod
    def get(self, ids: Sequence[EntityId]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
        """Return the stored (unit-norm) vectors of ``ids`` and which ids have one.

        Returns
        -------
        vectors, mask
            A fresh ``(n, dim)`` float32 array (zero rows where ``mask`` is False) and a
            ``(n,)`` bool array. Duplicated ids are allowed.

        Raises
        ------
        BadRequest
            ``ids`` is not a sequence of strings.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Return the number of live ids."""

    @abc.abstractmethod
    def __contains__(self, entity: object) -> bool:
        """Whether ``entity`` is a live id."""

    @abc.abstractmethod
    def stats(self) -> IndexStats:
        """Return a consistent snapshot of the index counters."""

    @abc.abstractmethod
    def fold(self) -> None:
        """Move buffered fresh vectors into the ANN structure (no-op where there is none).

        Query answers do not change: buffered vectors are already visible.
        """

    @abc.abstractmethod
    def rebuild(self) -> None:
        """Rebuild the ANN structure from the live vectors, dropping tombstones.

        A no-op for indexes without tombstones. Query answers do not change beyond
        approximation noise.
        """

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write the index into directory ``path`` (created if missing), manifest last.

        Raises
        ------
        OSError
            The directory cannot be written.
        """

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path, *, background: bool = False) -> VectorIndex:
        """Read an index written by :meth:`save` of the same class.

        ``background`` starts background maintenance where the class has any (not
        persisted: a runtime choice); others ignore it.

        Raises
        ------
        StateError
            The manifest is missing, of another format version or index kind, or
            disagrees with the data files.
        """

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until background maintenance (if any) has nothing left to do.

        Parameters
        ----------
        timeout
            Wall seconds to wait at most; None waits for ever.

        Returns
        -------
        bool
            True when idle (at once for indexes without background work), False if
            ``timeout`` ran out.

        Raises
        ------
        StateError
            A background maintenance thread died on an error.
        """
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, default is "nothing to stop"
        """Stop background work, if any; idempotent. The index stays usable."""

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_invariants(self) -> None:  # noqa: B027 - optional hook, default is "nothing to check"
        """Raise ``AssertionError`` if internal bookkeeping is inconsistent (contract tests)."""


# --------------------------------------------------------------------------- validation


def validate_ids(ids: Collection[EntityId], *, unique: bool) -> list[EntityId]:
    """Check ``ids`` holds non-empty strings; return them as a list of ``str``.

    Parameters
    ----------
    ids
        With ``unique`` (upserts, where order pairs ids with rows): a list, tuple or
        1-d array of strings. Otherwise (deletes, gets) any sized collection, e.g. a set.
        A bare string is always refused.
    unique
        Whether duplicates are an error (upserts) or allowed (deletes, gets).

    Raises
    ------
    BadRequest
        Not a sequence (collection), a non-string or empty id, or (with ``unique``) a
        duplicate.
    """
    accepted = (Sequence, np.ndarray) if unique else (Collection, np.ndarray)
    if isinstance(ids, str | bytes) or not isinstance(ids, accepted):
        kind = "sequence" if unique else "collection"
        msg = f"ids must be a {kind} of strings, got {type(ids).__name__}"
        raise BadRequest(msg)
    out: list[EntityId] = []
    for i, entity in enumerate(ids):
        if not isinstance(entity, str) or not entity:
            msg = f"ids[{i}] must be a non-empty string, got {entity!r}"
            raise BadRequest(msg)
        out.append(str(entity))
    if unique and len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(e for e in out if e in seen or seen.add(e))  # type: ignore[func-returns-value]
        msg = f"ids must be distinct within one upsert, got {dup!r} more than once"
        raise BadRequest(msg)
    return out


def _as_real_array(data: object, what: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"{what} must be an array of real numbers, got {type(data).__name__}"
        raise BadRequest(msg) from exc
    return arr


def _unit_rows(arr: npt.NDArray[np.float64]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
    """Normalise rows overflow-safely; return float32 unit rows and a validity mask."""
    finite = np.isfinite(arr).all(axis=1)
    safe = np.where(finite[:, None], arr, 0.0)
    scale = np.abs(safe).max(axis=1, initial=0.0)
    ok = finite & (scale > 0)
    scaled = safe / np.where(ok, scale, 1.0)[:, None]
    norms = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    unit = scaled / np.where(ok, norms, 1.0)[:, None]
    return np.ascontiguousarray(unit, dtype=np.float32), ok


def _describe_bad_row(arr: npt.NDArray[np.float64], row: int) -> str:
    values = arr[row]
    if np.isnan(values).any():
        return "NaN"
    if np.isinf(values).any():
        return "inf"
    return "zero norm"


def validate_vectors(ids: Sequence[EntityId], vectors: object, dim: int) -> Matrix:
    """Check ``vectors`` against ``ids`` and ``dim``; return unit-norm float32 rows.

    Parameters
    ----------
    ids
        The already validated ids, one per row.
    vectors
        Array-like of shape ``(len(ids), dim)``.
    dim
        The index dimension.

    Returns
    -------
    Matrix
        Shape ``(len(ids), dim)``, float32, C-contiguous, each row of unit L2 norm
        (normalised in float64 after scaling by the row's max, so huge finite values
        are fine).

    Raises
    ------
    BadRequest
        Not numeric, or a row count different from ``len(ids)``.
    DimensionMismatch
        Not 2-d with ``dim`` columns.
    InvalidVector
        A row with NaN, inf or zero norm; the message names the first such id.
    """
    arr = _as_real_array(vectors, "vectors")
    if arr.ndim != 2 or arr.shape[1] != dim:
        msg = f"index expects vectors of shape (n, {dim}), got array of shape {arr.shape}"
        raise DimensionMismatch(msg)
    if arr.shape[0] != len(ids):
        msg = f"got {len(ids)} ids but {arr.shape[0]} vector rows; expected one row per id"
        raise BadRequest(msg)
    unit, ok = _unit_rows(arr)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        first = int(bad[0])
        msg = (
            f"vector for id {ids[first]!r} has {_describe_bad_row(arr, first)} "
            f"({len(bad)} invalid row(s) in this call); expected finite, non-zero vectors"
        )
        raise InvalidVector(msg)
    return unit


def validate_query(query: object, dim: int) -> Vector:
    """Check one query vector; return it unit-normalised, float32, shape ``(dim,)``.

    Raises
    ------
    BadRequest
        Not numeric.
    DimensionMismatch
        Not of shape ``(dim,)``.
    InvalidVector
        NaN, inf or zero norm.
    """
    arr = _as_real_array(query, "query")
    if arr.shape != (dim,):
        msg = f"index expects a query of shape ({dim},), got array of shape {arr.shape}"
        raise DimensionMismatch(msg)
    unit, ok = _unit_rows(arr[None, :])
    if not ok[0]:
        msg = f"query vector has {_describe_bad_row(arr[None, :], 0)}; expected finite and non-zero"
        raise InvalidVector(msg)
    return unit[0]


def validate_queries(queries: object, dim: int) -> Matrix:
    """Check a batch of queries; return unit-norm float32 rows of shape ``(m, dim)``.

    Raises
    ------
    BadRequest
        Not numeric.
    DimensionMismatch
        Not of shape ``(m, dim)``.
    InvalidVector
        A row with NaN, inf or zero norm (the message names the first row number).
    """
    arr = _as_real_array(queries, "queries")
    if arr.ndim != 2 or arr.shape[1] != dim:
        msg = f"index expects queries of shape (m, {dim}), got array of shape {arr.shape}"
        raise DimensionMismatch(msg)
    unit, ok = _unit_rows(arr)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        msg = f"query row {first} has {_describe_bad_row(arr, first)}; expected finite and non-zero"
        raise InvalidVector(msg)
    return unit


def validate_k(k: object) -> int:
    """Check ``k`` is an integer ``>= 1`` (bools refused); return it as ``int``.

    Raises
    ------
    BadRequest
        Otherwise.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        msg = f"k must be an integer >= 1, got {k!r}"
        raise BadRequest(msg)
    return int(k)


def validate_exclude(exclude: Collection[EntityId]) -> frozenset[EntityId]:
    """Check ``exclude`` is a collection of ids (a bare string is refused).

    Raises
    ------
    BadRequest
        A bare string or a non-iterable.
    """
    if isinstance(exclude, str | bytes):
        msg = f"exclude must be a collection of ids, got the bare string {exclude!r}"
        raise BadRequest(msg)
    try:
        return frozenset(exclude)
    except TypeError as exc:
        msg = f"exclude must be a collection of ids, got {type(exclude).__name__}"
        raise BadRequest(msg) from exc


def top_k_rows(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Column indices of the ``k`` largest scores per row, best first.

    Parameters
    ----------
    scores
        Shape ``(m, n)``; ``-inf`` marks excluded columns.
    k
        ``1 <= k <= n``.

    Returns
    -------
    numpy.ndarray
        Shape ``(m, k)`` intp. Ties are broken by column index (stable sort).
    """
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part.sort(axis=1)  # column order so the stable sort below breaks ties by index
    else:
        part = np.broadcast_to(np.arange(n), (scores.shape[0], n)).copy()
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def clip_score(score: float) -> float:
    """Clamp a float32 dot product of unit vectors into ``[-1, 1]`` as a Python float."""
    return float(min(1.0, max(-1.0, score)))


# --------------------------------------------------------------------------- manifest


def write_manifest(path: Path, manifest: Mapping[str, object]) -> None:
    """Write ``manifest.json`` into ``path`` atomically (temp file + ``os.replace``).

    Written last by every ``save``, so a directory with a manifest is complete.
    """
    target = Path(path) / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, target)


def read_manifest(path: Path, kind: str | None) -> dict[str, Any]:
    """Read and check ``path/manifest.json``.

    Parameters
    ----------
    path
        A directory written by an index's ``save``.
    kind
        The index kind the caller can load (``"exact"``, ``"hnsw"``, ``"kinded"``), or
        ``None`` to accept any.

    Raises
    ------
    StateError
        Missing or unreadable manifest, another format version, another kind, or a
        space other than cosine.
    """
    target = Path(path) / MANIFEST
    try:
        manifest = json.loads(target.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read index manifest {str(target)!r}: {exc}; is this a saved index directory?"
        raise StateError(msg) from exc
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        msg = (
            f"index at {str(path)!r} has format_version={version!r}, this code reads "
            f"{FORMAT_VERSION}; rebuild the index from the feature table"
        )
        raise StateError(msg)
    if kind is not None and manifest.get("kind") != kind:
        msg = f"index at {str(path)!r} is of kind {manifest.get('kind')!r}, expected {kind!r}"
        raise StateError(msg)
    if manifest.get("space", SPACE) != SPACE:
        msg = f"index at {str(path)!r} uses space {manifest.get('space')!r}, expected {SPACE!r}"
        raise StateError(msg)
    return manifest


def load_index(path: Path, *, background: bool = False) -> VectorIndex:
    """Load any saved index, dispatching on the manifest's ``kind``.

    ``background`` is passed on to the class's ``load`` (HNSW maintenance thread).

    Raises
    ------
    StateError
        As :func:`read_manifest`, or an unknown kind.
    """
    from streamer.index.exact import ExactIndex
    from streamer.index.hnsw import HnswIndex
    from streamer.index.kinded import KindedIndex

    kinds: dict[str, type[VectorIndex]] = {
        "exact": ExactIndex,
        "hnsw": HnswIndex,
        "kinded": KindedIndex,
    }
    kind = read_manifest(path, None).get("kind")
    if kind not in kinds:
        msg = f"index at {str(path)!r} has unknown kind {kind!r}; expected one of {sorted(kinds)}"
        raise StateError(msg)
    return kinds[kind].load(path, background=background)


def grow_capacity(current: int, needed: int) -> int:
    """Geometric growth: at least double, and at least ``needed``."""
    return max(needed, 2 * current, 1) if needed > current else current


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Validate a constructor argument that must be an integer ``>= minimum``.

    Raises
    ------
    streamer.errors.ConfigError
        Otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ConfigError(msg)
    return int(value)


def fraction_or_none(name: str, value: object) -> float | None:
    """Validate a ratio in ``(0, 1]`` or ``None``.

    Raises
    ------
    streamer.errors.ConfigError
        Otherwise.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or not 0 < float(value) <= 1
    ):
        msg = f"{name} must be a number in (0, 1] or None, got {value!r}"
        raise ConfigError(msg)
    return float(value)
