"""In-memory twin of the RocksDB feature table (tests, demo mode).

It keeps the same three "column families" as :class:`streamer.store.rocks.RocksFeatureTable`
as dicts of **encoded** bytes, through the same codec (and the same vector storage
codec: a ``float16``/``int8`` twin holds the same lossy values a RocksDB table would), so
both backends validate, copy, order and fail identically (CONVENTIONS C3);
``streamer.checks.tables`` runs over both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

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
from streamer.store.quant import Codec
from streamer.types import EntityId


class MemoryFeatureTable(FeatureTable):
    """A :class:`~streamer.store.base.FeatureTable` held in process memory.

    Parameters
    ----------
    dim
        Vector dimension of every record.
    codec
        Vector storage codec (``float32``, ``float16`` or ``int8``): commits are
        encoded with it and reads return its reconstruction, as in RocksDB.

    Raises
    ------
    ConfigError
        If ``dim`` is not a positive int or ``codec`` is unknown.

    Notes
    -----
    Nothing survives the process. A commit is applied under the GIL after all its
    arguments were validated and encoded, so it is all-or-nothing like the RocksDB
    backend. Thread safety: as the ABC (single writer, concurrent readers).

    Examples
    --------
    >>> import numpy as np
    >>> t = MemoryFeatureTable(dim=2)
    >>> rec = FeatureRecord(np.array([0.5, 1.0], np.float32), 100.0, 1, 1)
    >>> t.commit({"i:a": rec}, {b"k": b"v"}, {("engagements", 0): 41})
    >>> t.get("i:a") == rec, t.offsets()
    (True, {('engagements', 0): 41})
    >>> q = MemoryFeatureTable(dim=2, codec="int8")
    >>> q.commit({"i:a": rec}, {}, {})
    >>> q.codec, q.get("i:a").vector.tolist()
    ('int8', [0.503936767578125, 0.9999995231628418])
    """

    def __init__(self, dim: int, codec: Codec = "float32") -> None:
        self._dim = check_dim(dim)
        self._codec = check_table_codec(codec)
        self._features: dict[bytes, bytes] = {}
        self._state: dict[bytes, bytes] = {}
        self._meta: dict[bytes, bytes] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryFeatureTable(dim={self._dim}, codec={self._codec!r})"

    @property
    def dim(self) -> int:
        """Vector dimension of every record in the table."""
        return self._dim

    @property
    def codec(self) -> Codec:
        """Vector storage codec of the table (fixed at construction)."""
        return self._codec

    @property
    def read_only(self) -> bool:
        """Always False: the twin has no reader mode."""
        return False

    def _check_open(self) -> None:
        if self._closed:
            msg = "memory feature table is closed; open a new one"
            raise StateError(msg)

    def commit(
        self,
        features: Mapping[EntityId, FeatureRecord | None],
        state: Mapping[bytes, bytes | None],
        offsets: Mapping[tuple[str, int], int],
    ) -> None:
        """Write features, learner state and offsets atomically (see the ABC)."""
        self._check_open()
        staged = codec.stage_commit(features, state, offsets, self._dim, self._codec)
        for target, items in ((self._features, staged.features), (self._state, staged.state)):
            for key, value in items:
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        self._meta.update(staged.offsets)

    def get_many(self, ids: Sequence[EntityId]) -> list[FeatureRecord | None]:
        """Return the record of each id or ``None``, in the order asked (see the ABC)."""
        self._check_open()
        keys = codec.entity_keys(ids)
        dim = self._dim
        out: list[FeatureRecord | None] = []
        for key in keys:
            value = self._features.get(key)
            out.append(None if value is None else codec.decode_record(value, dim, key=key))
        return out

    def offsets(self) -> dict[tuple[str, int], int]:
        """Return the last applied offset of every ``(topic, partition)``."""
        self._check_open()
        return {
            codec.parse_offset_key(k): codec.decode_offset(v, key=k)
            for k, v in sorted(self._meta.items())
            if k.startswith(codec.OFFSET_PREFIX)
        }

    def iter_features(self) -> Iterator[tuple[EntityId, FeatureRecord]]:
        """Yield ``(id, record)`` in key order, over a snapshot taken at the first step."""
        self._check_open()
        dim = self._dim
        for key, value in sorted(self._features.items()):
            yield codec.decode_entity(key), codec.decode_record(value, dim, key=key)

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Yield every learner state record in bytewise key order (snapshot)."""
        self._check_open()
        yield from sorted(self._state.items())

    def get_meta(self, key: str) -> bytes | None:
        """Return the metadata value under ``key`` or ``None``."""
        self._check_open()
        return self._meta.get(codec.meta_storage_key(meta_key(key)))

    def put_meta(self, key: str, value: bytes) -> None:
        """Store a metadata value."""
        self._check_open()
        self._meta[codec.meta_storage_key(meta_key(key))] = meta_value(key, value)

    def count(self) -> int:
        """Return the number of entities with a record."""
        self._check_open()
        return len(self._features)

    def refresh(self) -> None:
        """Do nothing: the twin has a single handle, always current (StateError if closed)."""
        self._check_open()

    def close(self) -> None:
        """Drop the contents; idempotent."""
        self._closed = True
        self._features, self._state, self._meta = {}, {}, {}
