"""RocksDB feature table via rocksdict (DESIGN §5-6, CONVENTIONS C9).

Layout: one RocksDB directory per embedding type/version (choosing the path is the
caller's job) with three column families, all in rocksdict raw mode (bytes only):

``features``
    UTF-8 entity id -> :func:`streamer.store.codec.encode_record` value, its vector
    encoded with the table's storage codec (``float32``, ``float16`` or ``int8``).
``state``
    Opaque learner state records, written verbatim.
``meta``
    ``o:`` offsets, ``m:`` user metadata (the type's manifest), ``s:`` table system
    records (format version, dim and vector codec, checked on every open; a table
    written before codecs existed has no codec record and is ``float32``).

Each :meth:`RocksFeatureTable.commit` is one ``WriteBatch`` across the three column
families, written with the write-ahead log on: RocksDB applies a batch atomically and
replays the WAL on open, so a ``kill -9`` of the process never loses or splits a batch
whose ``commit`` returned (``sync_writes=True`` adds an fsync per batch, needed only to
survive a machine or OS crash). See https://github.com/facebook/rocksdb/wiki/Write-Ahead-Log
and https://github.com/facebook/rocksdb/wiki/Read-only-and-Secondary-instances.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from streamer.errors import StateError
from streamer.store import codec
from streamer.store.base import (
    FeatureRecord,
    FeatureTable,
    check_dim,
    check_table_codec,
    meta_key,
    meta_value,
)
from streamer.store.quant import CODEC_IDS, Codec, codec_from_id
from streamer.types import EntityId

CF_FEATURES = "features"
CF_STATE = "state"
CF_META = "meta"
COLUMN_FAMILIES = (CF_FEATURES, CF_STATE, CF_META)

TABLE_FORMAT_VERSION = 1
"""Layout version of the whole table (column families + key namespaces)."""

_SYS_FORMAT = codec.system_key("format")
_SYS_DIM = codec.system_key("dim")
_SYS_CODEC = codec.system_key("codec")

_LOCK_ERROR = re.compile(r"^IO error: .*\bLOCK\b")


def is_lock_error(exc: BaseException) -> bool:
    """Tell whether a rocksdict open error means another handle holds the DB lock.

    rocksdict raises a bare ``Exception`` carrying RocksDB's status text, so the only
    way to recognise a lock conflict is the text (the ``LOCK`` file named in an
    ``IO error``). Seen with rocksdict 0.3.29 / RocksDB 9:

    * other process: ``IO error: While lock file: <path>/LOCK: Resource temporarily unavailable``
    * same process: ``IO error: lock hold by current process, ... <path>/LOCK: No locks available``

    This helper is the one place that parses that text (CONVENTIONS, anti-pattern notes).

    Examples
    --------
    >>> is_lock_error(Exception("IO error: While lock file: db/LOCK: Resource busy"))
    True
    >>> is_lock_error(Exception("IO error: No such file or directory: db/CURRENT"))
    False
    """
    return bool(_LOCK_ERROR.search(str(exc)))


class RocksFeatureTable(FeatureTable):
    """A :class:`~streamer.store.base.FeatureTable` in RocksDB (rocksdict).

    Parameters
    ----------
    path
        The table's directory (one per embedding type/version). Created, with its
        parents, when a writer opens it for the first time.
    dim
        Vector dimension; must equal the dim stored in the table, if any.
    codec
        Vector storage codec (``float32``, ``float16`` or ``int8``;
        :mod:`streamer.store.quant`), fixed for the life of the table: a new table stores
        it, and an existing table opened with another codec is refused. ``None`` (the
        default): whatever the table has (readers), or ``float32`` for a new table. A
        table without a codec record (written before codecs existed) is ``float32``.
    read_only
        Open a static read-only view (no lock; sees what was committed when opened,
        :meth:`refresh` reopens it).
    secondary_path
        Open as a RocksDB *secondary* instance that keeps its own info log in this
        directory (one directory per reader process); :meth:`refresh` then catches up
        with the writer incrementally (``try_catch_up_with_primary``). Implies a reader.
    sync_writes
        fsync the WAL on every commit (survives power loss, not just process kills;
        much slower). Default off.
    block_cache_bytes
        LRU block cache shared by the column families, bytes.

    Raises
    ------
    StateError
        If another worker holds the path (one writer per path), a reader's path holds
        no table, or the table has another dim, format or codec (it belongs to another
        type or version).
    ConfigError
        If ``dim`` is not a positive int or ``codec`` is unknown.

    Notes
    -----
    Thread safety: reads (``get_many``, iterators, ``offsets``) may run concurrently with
    each other and with ``commit`` (RocksDB is thread-safe); ``commit``/``put_meta``
    must be serialised by the caller. ``refresh`` on a read-only (not secondary) handle
    reopens the DB and must not run concurrently with reads. Close every iterator before
    :meth:`close` if the path is reopened in the same process: a live iterator keeps the
    DB (and its lock) alive.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> d = Path(tempfile.mkdtemp())
    >>> with RocksFeatureTable(d / "t", dim=2) as t:
    ...     t.commit({"i:a": FeatureRecord(np.ones(2, np.float32), 5.0, 1, 1)}, {}, {("e", 0): 9})
    >>> with RocksFeatureTable(d / "t", dim=2, read_only=True) as r:
    ...     r.get("i:a").updated_at, r.offsets(), r.codec
    (5.0, {('e', 0): 9}, 'float32')
    """

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        read_only: bool = False,
        secondary_path: Path | None = None,
        sync_writes: bool = False,
        block_cache_bytes: int = 64 << 20,
        codec: Codec | None = None,
    ) -> None:
        self._dim = check_dim(dim)
        self._asked_codec: Codec | None = None if codec is None else check_table_codec(codec)
        self._codec: Codec = self._asked_codec or "float32"  # the stored one, once open
        self._path = Path(path)
        self._secondary_path = None if secondary_path is None else Path(secondary_path)
        self._read_only = read_only or self._secondary_path is not None
        self._cache = Cache(block_cache_bytes)
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync_writes
        self._write_opts.disable_wal = False  # the WAL is what makes commits survive kill -9
        self._db: Rdict | None = None
        self._open()

    def __repr__(self) -> str:
        mode = "secondary" if self._secondary_path else "read_only" if self._read_only else "writer"
        return (f"RocksFeatureTable({str(self._path)!r}, dim={self._dim}, "
                f"codec={self._codec!r}, mode={mode})")

    # ----------------------------------------------------------------- opening

    def _db_options(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(not self._read_only)
        opts.create_missing_column_families(not self._read_only)
        opts.set_max_open_files(-1)  # required by secondary instances; fine for all
        opts.set_max_background_jobs(2)
        opts.set_bytes_per_sync(1 << 20)
        opts.set_max_total_wal_size(256 << 20)
        opts.set_keep_log_file_num(3)
        return opts

    def _cf_options(self, name: str) -> Options:
        opts = Options(raw_mode=True)
        table = BlockBasedOptions()
        table.set_block_cache(self._cache)
        table.set_bloom_filter(10, False)  # full filter: get_many of absent ids skips reads
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        if name == CF_FEATURES:
            # float32 vectors barely compress; spend no CPU on it
            opts.set_compression_type(DBCompressionType.none())
            opts.set_write_buffer_size(64 << 20)
        elif name == CF_STATE:
            opts.set_compression_type(DBCompressionType.lz4())
            opts.set_write_buffer_size(64 << 20)
        else:
            opts.set_compression_type(DBCompressionType.lz4())
            opts.set_write_buffer_size(4 << 20)
        return opts

    def _open(self) -> None:
        path = self._path
        if self._read_only and not (path / "CURRENT").is_file():
            msg = (
                f"no feature table at {path}: start the worker that owns this type first, "
                "or check the state directory and type version"
            )
            raise StateError(msg)
        try:
            if self._secondary_path is not None:
                self._secondary_path.mkdir(parents=True, exist_ok=True)
                access = AccessType.secondary(str(self._secondary_path))
            elif self._read_only:
                access = AccessType.read_only(False)  # the writer may be live: its WAL exists
            else:
                path.mkdir(parents=True, exist_ok=True)
                access = AccessType.read_write()
        except OSError as exc:  # a file in the way, a read-only or full file system
            msg = (f"cannot create the feature table folder {exc.filename or path}: "
                   f"{exc.strerror or exc}; expected a writable state directory "
                   "(STREAMER_STATE_DIR)")
            raise StateError(msg) from exc
        cfs = {name: self._cf_options(name) for name in COLUMN_FAMILIES}
        try:
            db = Rdict(str(path), self._db_options(), column_families=cfs, access_type=access)
        except Exception as exc:  # rocksdict raises bare Exception  # noqa: BLE001
            if is_lock_error(exc):
                msg = (
                    f"feature table {path} is locked: another worker holds it (one writer "
                    "per path). Stop that worker, or open this path read-only / as a "
                    "secondary reader"
                )
                raise StateError(msg) from exc
            msg = f"cannot open feature table {path}: {exc}"
            raise StateError(msg) from exc
        self._db = db
        self._cf_features = db.get_column_family(CF_FEATURES)
        self._cf_state = db.get_column_family(CF_STATE)
        self._cf_meta = db.get_column_family(CF_META)
        self._h_features = db.get_column_family_handle(CF_FEATURES)
        self._h_state = db.get_column_family_handle(CF_STATE)
        self._h_meta = db.get_column_family_handle(CF_META)
        try:
            self._check_or_init_format()
        except BaseException:
            self._release()
            raise

    def _check_or_init_format(self) -> None:
        stored_format = self._cf_meta.get(_SYS_FORMAT)
        if stored_format is None:
            empty = all(
                next(iter(cf.keys()), None) is None
                for cf in (self._cf_features, self._cf_state, self._cf_meta)
            )
            if self._read_only or not empty:
                what = "is not initialised yet" if empty else "holds data but no format record"
                msg = (
                    f"feature table {self._path} {what}; it was not written by a streamer "
                    "worker (or the worker has not started): check the path"
                )
                raise StateError(msg)
            batch = WriteBatch(raw_mode=True)
            batch.put(_SYS_FORMAT, codec.encode_offset(TABLE_FORMAT_VERSION), self._h_meta)
            batch.put(_SYS_DIM, codec.encode_offset(self._dim), self._h_meta)
            batch.put(_SYS_CODEC, codec.encode_offset(CODEC_IDS[self._codec]), self._h_meta)
            self._write(batch)
            return
        fmt = codec.decode_offset(stored_format, key=_SYS_FORMAT)
        if fmt != TABLE_FORMAT_VERSION:
            msg = (
                f"feature table {self._path} has format version {fmt}, this code reads "
                f"version {TABLE_FORMAT_VERSION}: rebuild it by replay into a new path"
            )
            raise StateError(msg)
        raw_dim = self._cf_meta.get(_SYS_DIM)
        stored_dim = None if raw_dim is None else codec.decode_offset(raw_dim, key=_SYS_DIM)
        if stored_dim != self._dim:
            msg = (
                f"feature table {self._path} has dim={stored_dim}, but dim={self._dim} was "
                "asked: it belongs to another type or params. Use a new path (bump the "
                "type version) or open it with its own dim"
            )
            raise StateError(msg)
        self._check_or_init_codec()

    def _check_or_init_codec(self) -> None:
        raw = self._cf_meta.get(_SYS_CODEC)
        # a table from before the codecs has no codec record: all its records are float32
        stored: Codec = "float32"
        if raw is not None:
            try:
                stored = codec_from_id(codec.decode_offset(raw, key=_SYS_CODEC))
            except StateError as exc:
                msg = f"feature table {self._path} has a corrupt codec record: {exc}"
                raise StateError(msg) from exc
        asked = self._asked_codec
        if asked is not None and asked != stored:
            msg = (
                f"feature table {self._path} stores vectors as {stored}, but codec {asked} "
                "was asked: a table's codec is fixed. Bump the type's version (a new "
                f"table, then replay or backfill into it) or open it with codec {stored}"
            )
            raise StateError(msg)
        self._codec = stored
        if raw is None and not self._read_only:
            batch = WriteBatch(raw_mode=True)
            batch.put(_SYS_CODEC, codec.encode_offset(CODEC_IDS[stored]), self._h_meta)
            self._write(batch)

    def _release(self) -> None:
        db, self._db = self._db, None
        # CF handles keep the DB (and its LOCK) alive: drop them before closing
        self._cf_features = self._cf_state = self._cf_meta = None  # type: ignore[assignment]
        self._h_features = self._h_state = self._h_meta = None  # type: ignore[assignment]
        if db is not None:
            db.close()

    # ----------------------------------------------------------------- helpers

    @property
    def path(self) -> Path:
        """The table's directory."""
        return self._path

    @property
    def dim(self) -> int:
        """Vector dimension of every record in the table."""
        return self._dim

    @property
    def codec(self) -> Codec:
        """Vector storage codec of the table (the stored one; see the ``codec`` param)."""
        return self._codec

    @property
    def read_only(self) -> bool:
        """True for read-only and secondary handles."""
        return self._read_only

    def _live_db(self) -> Rdict:
        if self._db is None:
            msg = f"feature table {self._path} is closed; open a new RocksFeatureTable"
            raise StateError(msg)
        return self._db

    def _check_writer(self) -> None:
        self._live_db()
        if self._read_only:
            msg = (
                f"feature table {self._path} is open as a reader; only the worker that "
                "owns the path writes to it"
            )
            raise StateError(msg)

    def _write(self, batch: WriteBatch) -> None:
        try:
            self._live_db().write(batch, self._write_opts)
        except Exception as exc:  # noqa: BLE001
            msg = f"write to feature table {self._path} failed: {exc}"
            raise StateError(msg) from exc

    # --------------------------------------------------------------------- API

    def commit(
        self,
        features: Mapping[EntityId, FeatureRecord | None],
        state: Mapping[bytes, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """Write features, learner state and offsets in one ``WriteBatch`` (see the ABC)."""
        self._check_writer()
        staged = codec.stage_commit(features, state, offsets, self._dim, self._codec)
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for handle, items in (
            (self._h_features, staged.features),
            (self._h_state, staged.state),
        ):
            for key, value in items:
                if value is None:
                    delete(key, handle)
                else:
                    put(key, value, handle)
        h_meta = self._h_meta
        for key, value in staged.offsets:
            put(key, value, h_meta)
        self._write(batch)

    def get_many(self, ids: Sequence[EntityId]) -> list[FeatureRecord | None]:
        """Return the record of each id or ``None`` (one RocksDB multi-get)."""
        self._live_db()
        keys = codec.entity_keys(ids)
        if not keys:
            return []
        # one numpy pass over the batch (benchmarks/store.py: int8 get100 p99 0.98 -> 0.34 ms)
        return codec.decode_records(self._cf_features[keys], self._dim, keys=keys)

    def offsets(self) -> dict[tuple[str, int], int]:
        """Return the last applied offset of every ``(topic, partition)``."""
        self._live_db()
        out: dict[tuple[str, int], int] = {}
        prefix = codec.OFFSET_PREFIX
        for key, value in self._cf_meta.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            out[codec.parse_offset_key(key)] = codec.decode_offset(value, key=key)
        return out

    def iter_encoded_features(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield the stored ``(entity key, value)`` bytes in key order, undecoded.

        For re-publishing a table as it is (``streamer backfill``'s sweep); see
        :func:`streamer.store.codec.current_frame_time` to tell which values can go out
        unchanged.
        """
        self._live_db()
        yield from self._cf_features.items()

    def iter_features(self) -> Iterator[tuple[EntityId, FeatureRecord]]:
        """Yield ``(id, record)`` in key order, from a consistent view taken at the first step."""
        self._live_db()
        dim = self._dim
        for key, value in self._cf_features.items():
            yield codec.decode_entity(key), codec.decode_record(value, dim, key=key)

    def view(self) -> tuple[dict[tuple[str, int], int], Iterator[tuple[EntityId, FeatureRecord]]]:
        """Return the offsets and a pinned RocksDB iterator over the features (see base).

        The iterator is created here, so it sees exactly the commits made before this call
        (a RocksDB iterator reads from the implicit snapshot of its creation); consume it
        from one thread only.
        """
        self._live_db()
        offsets = self.offsets()
        pinned = self._cf_features.items()
        dim = self._dim

        def records() -> Iterator[tuple[EntityId, FeatureRecord]]:
            for key, value in pinned:
                yield codec.decode_entity(key), codec.decode_record(value, dim, key=key)

        return offsets, records()

    def get_state(self, key: bytes) -> bytes | None:
        """Return one state record's value or ``None`` (a point lookup)."""
        self._live_db()
        value = self._cf_state.get(key)
        return None if value is None else bytes(value)

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield every learner state record in bytewise key order."""
        self._live_db()
        yield from self._cf_state.items()

    def get_meta(self, key: str) -> bytes | None:
        """Return the metadata value under ``key`` or ``None``."""
        self._live_db()
        return self._cf_meta.get(codec.meta_storage_key(meta_key(key)))

    def put_meta(self, key: str, value: bytes) -> None:
        """Store a metadata value (one WAL-logged write)."""
        self._check_writer()
        batch = WriteBatch(raw_mode=True)
        batch.put(codec.meta_storage_key(meta_key(key)), meta_value(key, value), self._h_meta)
        self._write(batch)

    def count(self) -> int:
        """Return the number of entities with a record (a key scan: O(n))."""
        self._live_db()
        return sum(1 for _ in self._cf_features.keys())

    def refresh(self) -> None:
        """Catch up with the writer (secondary), reopen (read-only) or do nothing (writer).

        Raises
        ------
        StateError
            If the table is closed or catching up fails.
        """
        db = self._live_db()
        if not self._read_only:
            return
        if self._secondary_path is not None:
            try:
                db.try_catch_up_with_primary()
            except Exception as exc:  # noqa: BLE001
                msg = f"secondary reader of {self._path} could not catch up: {exc}"
                raise StateError(msg) from exc
            return
        self._release()
        self._open()

    def close(self) -> None:
        """Close the DB and release its lock; idempotent."""
        self._release()
