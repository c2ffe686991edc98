"""Transfer between embedding types: read one type's vectors to warm-start another.

``streamer worker --type NEW --init-from OLD`` seeds a *fresh* type ``NEW`` with the
vectors ``OLD`` holds in its feature table for the ids the two share (DESIGN §3,
"Transfer"; the issue's "transfer learning"). This module holds the pure pieces:
the record of where a warm start came from (:class:`WarmStart`, kept in the target
table's metadata under :data:`INIT_FROM_META_KEY`), the argument checks, and a reader
of the source table that does not disturb a running source worker (a RocksDB secondary
instance: no lock, no writes; see
https://github.com/facebook/rocksdb/wiki/Read-only-and-Secondary-instances).
:meth:`streamer.engine.Engine.warm_start` applies it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError, DimensionMismatch, StateError
from streamer.store.base import FeatureTable, claim_manifest
from streamer.topology import TopologySpec
from streamer.types import EntityId, Matrix

INIT_FROM_META_KEY = "init_from"
"""Metadata key of the target table that records its warm start (JSON of :class:`WarmStart`)."""


@dataclass(frozen=True)
class WarmStart:
    """Where a type's warm start came from (stored in its table's metadata, shown in /metrics).

    Attributes
    ----------
    source
        Source type name.
    source_version
        Source type version.
    source_algorithm
        Source algorithm name.
    offered
        Number of ids read from the source table (users and items).
    ids
        Number of ids the target learner gave a vector (its ``warm_start`` return value).
    """

    source: str
    source_version: int
    source_algorithm: str
    offered: int
    ids: int

    def to_json(self) -> dict[str, object]:
        """Return a JSON-able dict of the fields."""
        return asdict(self)

    def to_bytes(self) -> bytes:
        """Return canonical JSON bytes (sorted keys) for the table metadata."""
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> WarmStart:
        """Parse :meth:`to_bytes` output.

        Raises
        ------
        StateError
            If the bytes are not a valid record (corrupt metadata).
        """
        try:
            doc = json.loads(raw)
            return cls(source=str(doc["source"]), source_version=int(doc["source_version"]),
                       source_algorithm=str(doc["source_algorithm"]),
                       offered=int(doc["offered"]), ids=int(doc["ids"]))
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"corrupt {INIT_FROM_META_KEY!r} metadata record {raw!r:.200}: {exc}"
            raise StateError(msg) from exc


def check_transfer(target: TopologySpec, source: TopologySpec) -> None:
    """Refuse a warm start of a type from itself.

    Raises
    ------
    ConfigError
        If ``source`` names the same type and version as ``target``.
    """
    if source.name == target.name and source.version == target.version:
        msg = (f"--init-from {source.name}: a type cannot warm-start from itself; expected "
               "another declared type (see `streamer types`)")
        raise ConfigError(msg)


def type_dim(spec: TopologySpec) -> int:
    """Return the vector dimension of ``spec`` (its ``dim`` param, else its learner's ``dim``).

    Raises
    ------
    ConfigError
        If the learner must be built and its algorithm is unknown or rejects the params.
    """
    dim = spec.params.get("dim")
    if isinstance(dim, int) and not isinstance(dim, bool):
        return dim
    from streamer.learn.registry import build_learner

    return build_learner(spec.algorithm, spec.params).dim


def table_path(spec: TopologySpec, *, state_dir: Path, path_prefix: str = "") -> Path:
    """Return the RocksDB path of ``spec``: ``state_dir / "<path_prefix><name>.v<version>"``."""
    return Path(state_dir) / f"{path_prefix}{spec.state_dirname}"


def read_vectors(
    source: TopologySpec, table: FeatureTable, *, dim: int,
) -> tuple[list[EntityId], Matrix, npt.NDArray[np.float64]]:
    """Read every vector of ``source`` from its open feature table.

    Parameters
    ----------
    source
        The source type (its manifest must match the table's).
    table
        The source's feature table (any mode; read from one consistent iterator).
    dim
        The target's dimension; must equal the table's.

    Returns
    -------
    ids, vectors, updated_at
        Namespaced ids in key order; ``(len(ids), dim)`` float32; ``(len(ids),)``
        float64 event seconds of each vector's last update.

    Raises
    ------
    DimensionMismatch
        If the source table's dim differs from ``dim``.
    ConfigError
        If the table holds no vectors.
    StateError
        If the table belongs to another type/params than ``source``.
    """
    claim_manifest(table, {"fingerprint": source.fingerprint(), **source.manifest()})
    if table.dim != dim:
        msg = (f"--init-from {source.name}: its vectors have dim {table.dim}, the new type "
               f"has dim {dim}; transfer needs equal dims (declare the new type with "
               f"dim={table.dim})")
        raise DimensionMismatch(msg)
    ids: list[EntityId] = []
    rows: list[np.ndarray] = []
    stamps: list[float] = []
    for entity, rec in table.iter_features():
        ids.append(entity)
        rows.append(rec.vector)
        stamps.append(rec.updated_at)
    if not ids:
        msg = (f"--init-from {source.name}: its feature table holds no vectors yet; let "
               f"`streamer worker --type {source.name}` consume some events first")
        raise ConfigError(msg)
    return ids, np.stack(rows).astype(np.float32, copy=False), np.asarray(stamps, np.float64)


def load_source_vectors(
    source: TopologySpec, *, state_dir: Path, path_prefix: str = "", dim: int,
) -> tuple[list[EntityId], Matrix, npt.NDArray[np.float64]]:
    """Open ``source``'s feature table as a RocksDB secondary reader and read its vectors.

    A secondary instance takes no lock and never writes, so a running source worker is
    not disturbed; it sees every batch the source committed before the open.

    Parameters
    ----------
    source
        The source type.
    state_dir, path_prefix
        Where the source's table lives (same settings as the source worker).
    dim
        The target's dimension.

    Returns
    -------
    ids, vectors, updated_at
        See :func:`read_vectors`.

    Raises
    ------
    ConfigError
        If there is no table at the source's path, or it holds no vectors.
    DimensionMismatch
        If the source's dim differs from ``dim``.
    StateError
        If the table is unreadable or belongs to other params.
    """
    from streamer.store.rocks import RocksFeatureTable

    path = table_path(source, state_dir=state_dir, path_prefix=path_prefix)
    if not (path / "CURRENT").is_file():
        msg = (f"--init-from {source.name}: no feature table at {path}; run "
               f"`streamer worker --type {source.name}` first with the same "
               "STREAMER_STATE_DIR and STREAMER_TOPIC_PREFIX")
        raise ConfigError(msg)
    src_dim = type_dim(source)
    if src_dim != dim:
        msg = (f"--init-from {source.name}: its vectors have dim {src_dim}, the new type "
               f"has dim {dim}; transfer needs equal dims (declare the new type with "
               f"dim={src_dim})")
        raise DimensionMismatch(msg)
    with tempfile.TemporaryDirectory(prefix="streamer-init-from-") as tmp:
        table = RocksFeatureTable(path, dim=src_dim, secondary_path=Path(tmp))
        try:
            return read_vectors(source, table, dim=dim)
        finally:
            table.close()
