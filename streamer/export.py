"""Offline access: export a snapshot as Parquet or ``.npy`` files, and read it back (DESIGN §5).

``streamer export TYPE [--snapshot ID] --format parquet|npy --out PATH`` writes one
snapshot (:mod:`streamer.snapshot`) of an embedding type for offline use (training
sets, notebooks, Spark/DuckDB/pandas):

* ``parquet``: one file, one row per entity, columns

  ========== ================================ ==========================================
  column     Arrow type                       meaning
  ========== ================================ ==========================================
  id         ``string``                       namespaced id (``u:...`` / ``i:...``)
  kind       ``string``                       ``"user"`` or ``"item"`` (from the prefix)
  vector     ``fixed_size_list<float>[dim]``  the float32 vector, bit for bit
  updated_at ``double``                       event seconds of the last update
  update_count ``int64``                      events applied to the entity
  ========== ================================ ==========================================

  with the snapshot's manifest (JSON) in the schema metadata under
  :data:`MANIFEST_META_KEY` and the export layout version under
  :data:`FORMAT_META_KEY`. Rows are in the snapshot's (key) order.
* ``npy``: a folder with the snapshot's own files, ``vectors.npy`` ``(n, dim)`` float32,
  ``ids.json``, ``updated_at.npy`` ``(n,)`` float64, ``update_count.npy`` ``(n,)`` int64
  and ``manifest.json``.

Both are written into a hidden temporary file/folder beside ``--out`` and renamed into
place, so a reader never sees half an export. :func:`read_export` reads either back
exactly (same ids, bitwise-equal vectors, same columns and manifest).

Parquet is written with pyarrow (https://arrow.apache.org/docs/python/parquet.html).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, get_args

import numpy as np
import numpy.typing as npt
import typer

from streamer.errors import BadRequest, ConfigError, StateError
from streamer.snapshot import store_for

if TYPE_CHECKING:
    from streamer.snapshot import Snapshot
    from streamer.topology import TopologySpec

__all__ = ["FORMAT_META_KEY", "MANIFEST_META_KEY", "Export", "ExportFormat", "export_cmd",
           "export_snapshot", "read_export", "take_snapshot"]

ExportFormat = Literal["parquet", "npy"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
MANIFEST_META_KEY = b"streamer.manifest"
"""Parquet schema-metadata key holding the snapshot manifest (JSON, UTF-8)."""
FORMAT_META_KEY = b"streamer.export_format"
"""Parquet schema-metadata key holding the export layout version (``b"1"``)."""
EXPORT_FORMAT = 1
_NPY_FILES = ("vectors.npy", "ids.json", "updated_at.npy", "update_count.npy",
              "manifest.json")
_KINDS = {"u:": "user", "i:": "item"}


class Export(NamedTuple):
    """An export read back by :func:`read_export`.

    Attributes
    ----------
    ids
        ``n`` namespaced ids in row order.
    vectors
        Shape ``(n, dim)`` float32.
    updated_at
        Shape ``(n,)`` float64, event seconds of each entity's last update.
    update_count
        Shape ``(n,)`` int64, events applied to each entity.
    manifest
        The snapshot's manifest (type, version, offsets, event_time, ...).
    """

    ids: list[str]
    vectors: npt.NDArray[np.float32]
    updated_at: npt.NDArray[np.float64]
    update_count: npt.NDArray[np.int64]
    manifest: dict[str, Any]


def entity_kind(entity: str) -> str:
    """Return ``"user"`` or ``"item"`` from an id's ``u:``/``i:`` prefix.

    Raises
    ------
    StateError
        If the id has neither prefix (snapshots only hold namespaced ids).
    """
    kind = _KINDS.get(entity[:2])
    if kind is None:
        msg = f"snapshot id {entity!r:.80} has no 'u:' or 'i:' prefix; the snapshot is corrupt"
        raise StateError(msg)
    return kind


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        msg = f"--format {fmt!r}: expected one of {', '.join(FORMATS)}"
        raise BadRequest(msg)


def _check_out(out: Path, *, force: bool) -> None:
    if (out.exists() or out.is_symlink()) and not force:
        msg = f"--out {out} already exists; choose another path or pass --force to replace it"
        raise BadRequest(msg)


def export_snapshot(snapshot: Snapshot, out: Path, fmt: ExportFormat, *,
                    force: bool = False) -> Path:
    """Write ``snapshot`` to ``out`` as Parquet (a file) or ``.npy`` files (a folder).

    Parameters
    ----------
    snapshot
        A stored snapshot (:meth:`streamer.snapshot.SnapshotStore.get`).
    out
        Target file (``parquet``) or folder (``npy``); missing parent folders are made.
    fmt
        ``"parquet"`` or ``"npy"`` (layouts in the module docstring).
    force
        Replace an existing ``out`` (the old one is removed only after the new one is
        in place).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    BadRequest
        If ``fmt`` is unknown, or ``out`` exists and ``force`` is false.
    ConfigError
        If ``out`` cannot be written (permissions, not a folder, disk full).
    StateError
        If the snapshot's files are unreadable or disagree.
    """
    _check_format(fmt)
    out = Path(out)
    _check_out(out, force=force)
    emb = snapshot.load()
    try:
        updated_at, update_count = snapshot.columns()
    except (OSError, ValueError) as exc:
        msg = f"snapshot {snapshot.path} is unreadable: {exc}"
        raise StateError(msg) from exc
    if len(updated_at) != len(emb) or len(update_count) != len(emb):
        msg = (f"snapshot {snapshot.path} is inconsistent: {len(emb)} ids, "
               f"{len(updated_at)} updated_at, {len(update_count)} update_count")
        raise StateError(msg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            tmp = _tmp_beside(out)
            try:
                _write_parquet(tmp, list(emb.ids), emb.vectors, updated_at, update_count,
                               snapshot.manifest)
                _fsync(tmp)
                _put_in_place(tmp, out, force=force)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            tmp = _tmp_beside(out)
            tmp.mkdir()
            try:
                for name in _NPY_FILES:
                    shutil.copyfile(snapshot.path / name, tmp / name)
                    _fsync(tmp / name)
                _fsync(tmp)
                _put_in_place(tmp, out, force=force)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        _fsync(out.parent)
    except OSError as exc:
        msg = f"cannot write the export to {out}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    return out


def _write_parquet(path: Path, ids: list[str], vectors: npt.NDArray[np.float32],
                   updated_at: npt.NDArray[np.float64], update_count: npt.NDArray[np.int64],
                   manifest: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(vectors.shape[1])
    flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
    schema = pa.schema(
        [pa.field("id", pa.string(), nullable=False),
         pa.field("kind", pa.string(), nullable=False),
         pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
         pa.field("updated_at", pa.float64(), nullable=False),
         pa.field("update_count", pa.int64(), nullable=False)],
        metadata={MANIFEST_META_KEY: json.dumps(manifest, sort_keys=True).encode(),
                  FORMAT_META_KEY: str(EXPORT_FORMAT).encode()})
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()),
         pa.array([entity_kind(e) for e in ids], pa.string()),
         pa.FixedSizeListArray.from_arrays(flat, type=schema.field("vector").type),
         pa.array(np.asarray(updated_at, np.float64), pa.float64()),
         pa.array(np.asarray(update_count, np.int64), pa.int64())],
        schema=schema)
    pq.write_table(table, str(path))


def _tmp_beside(out: Path) -> Path:
    """Return an unused hidden temporary path in ``out``'s folder (same file system)."""
    return out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _put_in_place(tmp: Path, out: Path, *, force: bool) -> None:
    """Rename ``tmp`` to ``out``; with ``force``, replace an existing ``out``.

    A file replaces a file atomically (``os.replace``); otherwise the old ``out`` is
    moved aside, the new one renamed in, and the old one removed.
    """
    old = None
    if force and tmp.is_file() and out.is_file() and not out.is_symlink():
        os.replace(tmp, out)
        return
    if force and (out.exists() or out.is_symlink()):
        old = _tmp_beside(out)
        os.rename(out, old)
    elif out.exists() or out.is_symlink():  # appeared since the check
        _check_out(out, force=False)
    os.rename(tmp, out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_export(path: Path) -> Export:
    """Read an export written by :func:`export_snapshot` (either format, detected).

    Parameters
    ----------
    path
        The Parquet file or the ``npy`` folder.

    Returns
    -------
    Export
        ``(ids, vectors, updated_at, update_count, manifest)``; shapes and dtypes in
        :class:`Export`.

    Raises
    ------
    BadRequest
        If ``path`` does not exist or is not a streamer export.
    StateError
        If the export's parts disagree in length.
    """
    path = Path(path)
    if path.is_dir():
        missing = [n for n in _NPY_FILES if not (path / n).is_file()]
        if missing:
            msg = (f"{path} is not a streamer npy export: missing {', '.join(missing)}; "
                   f"expected the files {', '.join(_NPY_FILES)}")
            raise BadRequest(msg)
        try:
            ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
            vectors = np.load(path / "vectors.npy", allow_pickle=False)
            updated_at = np.load(path / "updated_at.npy", allow_pickle=False)
            update_count = np.load(path / "update_count.npy", allow_pickle=False)
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            msg = f"npy export {path} is unreadable: {exc}"
            raise StateError(msg) from exc
    elif path.is_file():
        ids, vectors, updated_at, update_count, manifest = _read_parquet(path)
    else:
        msg = f"export {path} does not exist; expected a .parquet file or an npy export folder"
        raise BadRequest(msg)
    n = len(ids)
    if (vectors.ndim != 2 or len(vectors) != n or updated_at.shape != (n,)
            or update_count.shape != (n,)):
        msg = (f"export {path} is inconsistent: {n} ids, vectors {vectors.shape}, "
               f"updated_at {updated_at.shape}, update_count {update_count.shape}")
        raise StateError(msg)
    return Export(list(ids), vectors.astype(np.float32, copy=False),
                  updated_at.astype(np.float64, copy=False),
                  update_count.astype(np.int64, copy=False), manifest)


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                       dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        msg = f"{path} is not a readable Parquet file ({exc}); expected a streamer export"
        raise BadRequest(msg) from None
    meta = table.schema.metadata or {}
    names = set(table.column_names)
    want = {"id", "vector", "updated_at", "update_count"}
    if MANIFEST_META_KEY not in meta or not want <= names:
        msg = (f"{path} is not a streamer export: expected columns {sorted(want)} and "
               f"schema metadata {MANIFEST_META_KEY.decode()!r}")
        raise BadRequest(msg)
    vtype = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype) or vtype.value_type != pa.float32():
        msg = f"{path}: column 'vector' is {vtype}, expected fixed_size_list<float32>"
        raise BadRequest(msg)
    dim = vtype.list_size
    col = table.column("vector").combine_chunks()
    if col.null_count:
        msg = f"{path}: column 'vector' has {col.null_count} nulls"
        raise StateError(msg)
    vectors = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
    vectors = vectors.reshape(len(table), dim)
    ids = table.column("id").to_pylist()
    updated_at = table.column("updated_at").to_numpy().astype(np.float64, copy=False)
    update_count = table.column("update_count").to_numpy().astype(np.int64, copy=False)
    try:
        manifest = json.loads(meta[MANIFEST_META_KEY])
    except ValueError as exc:
        msg = f"{path}: manifest metadata is not JSON: {exc}"
        raise StateError(msg) from exc
    return ids, vectors, updated_at, update_count, manifest


def take_snapshot(settings: Any, spec: TopologySpec, *, trigger: str = "export") -> Snapshot:
    """Snapshot ``spec``'s live feature table now into its snapshot store (never prunes).

    The table is opened as a RocksDB secondary (no lock, no writes), so a running worker
    is not disturbed; the snapshot holds every batch committed before the call. This is
    what ``streamer snapshot TYPE`` does.

    Parameters
    ----------
    settings
        :class:`streamer.settings.Settings` (``state_dir``, ``topic_prefix``, bench).
    spec
        The embedding type.
    trigger
        Recorded in the manifest's ``trigger``.

    Returns
    -------
    Snapshot
        The new stored snapshot.

    Raises
    ------
    ConfigError
        If the type has no feature table under the settings' state dir.
    StateError
        If the table belongs to other params, or the snapshot cannot be written.
    """
    from streamer.engine import COUNTERS_KEY
    from streamer.snapshot import capture
    from streamer.store.base import claim_manifest
    from streamer.store.rocks import RocksFeatureTable
    from streamer.transfer import table_path, type_dim

    path = table_path(spec, state_dir=settings.state_dir, path_prefix=settings.topic_prefix)
    if not (path / "CURRENT").is_file():
        msg = (f"no feature table for {spec.name} at {path}; run `streamer worker --type "
               f"{spec.name}` first with the same STREAMER_STATE_DIR and STREAMER_TOPIC_PREFIX, "
               "or export a stored snapshot with --snapshot")
        raise ConfigError(msg)
    store = store_for(settings, spec)
    with tempfile.TemporaryDirectory(prefix="streamer-export-") as tmp:
        table = RocksFeatureTable(path, dim=type_dim(spec), secondary_path=Path(tmp))
        try:
            claim_manifest(table, {"fingerprint": spec.fingerprint(), **spec.manifest()})
            applied = 0
            counters = table.get_state(COUNTERS_KEY)
            if counters:
                try:
                    applied = int(json.loads(counters).get("accepted", 0))
                except (ValueError, AttributeError):
                    applied = 0
            snap = store.write(capture(table, events_applied=applied, trigger=trigger))
        finally:
            table.close()
    # no pruning here: a CLI snapshot or export must not delete the worker's scheduled
    # snapshots (reads as of a snapshot, benchmark history); the worker's schedule prunes
    return snap


def export_cmd(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="Embedding type")],
    out: Annotated[Path, typer.Option("--out", help="Target file (parquet) or folder (npy)")],
    fmt: Annotated[str, typer.Option(
        "--format", help="parquet (one file, one row per entity, manifest in the schema "
        "metadata) or npy (a folder of .npy files, ids.json and manifest.json)")] = "parquet",
    snapshot: Annotated[str | None, typer.Option(
        "--snapshot", help="Stored snapshot id, e.g. 3 or 000003, or 'latest' (default: take "
        "a fresh snapshot of the live feature table and export it)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Export a snapshot of TYPE (ids, vectors, updated_at, update_count, manifest).

    Without --snapshot, takes a snapshot of the live feature table first (as `streamer
    snapshot TYPE`: a running worker is not disturbed) and exports that.
    Read it back with `streamer.export.read_export(path)` or any Parquet reader.
    """
    from streamer.cli import _settings, _spec

    _check_format(fmt)
    _check_out(out, force=force)
    settings = _settings()
    spec = _spec(type_name)
    if snapshot is None:
        snap = take_snapshot(settings, spec)
    else:
    
        sid = f"{int(snapshot):06d}" if snapshot.isascii() and snapshot.isdigit() else snapshot
        snap = store_for(settings, spec).get(sid)
    path = export_snapshot(snap, out, fmt, force=force)  # type: ignore[arg-type]
    m = snap.manifest
    if as_json:
        sys.stdout.write(json.dumps({"path": str(path), "format": fmt, "snapshot": snap.id,
                                     "type": spec.name, "version": spec.version,
                                     "n_entities": m.get("n_entities"), "dim": m.get("dim"),
                                     "event_time": m.get("event_time")}) + "\n")
    else:
        sys.stdout.write(f"exported snapshot {snap.id} of {spec.name} v{spec.version} "
                         f"({m.get('n_entities')} entities, dim {m.get('dim')}, event time "
                         f"{m.get('event_time')}) as {fmt} to {path}\n")
