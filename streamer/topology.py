"""Declarative embedding-type specs (CONVENTIONS C12): data, not wiring.

A :class:`TopologySpec` names an embedding type: its algorithm and parameters, its
version (bumping it means a new consumer group, a new RocksDB path and a new
``embeddings.<type>.v<version>`` topic, so a backfill starts clean), the source topic
and the key the stream is partitioned by.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streamer.errors import ConfigError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

#: Default action -> weight multiplier (DESIGN §2). Unknown actions are rejected.
DEFAULT_ACTION_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "follow": 1.0, "like": 1.0, "retweet": 1.0, "reply": 1.0, "click": 1.0, "edit": 1.0,
    "tag": 1.0, "listen": 1.0, "message": 1.0, "email": 1.0, "rate": 1.0,
})


@dataclass(frozen=True)
class TopologySpec:
    """One embedding type.

    Attributes
    ----------
    name
        Type name, lowercase ``[a-z0-9-]``, e.g. ``wiki-cooc``.
    algorithm
        Registered algorithm name (``streamer.learn.registry``), e.g. ``cooc``.
    params
        Constructor keyword arguments of the algorithm (``dim``, ``half_life_s``, ``seed``...).
    version
        Positive int; part of the state path, consumer group and output topic.
    source
        Source topic of engagements.
    partition_key
        Field the source topic is keyed by (``user_id``; DESIGN §2).
    action_weights
        Action -> weight multiplier; actions not listed are dead-lettered (``unknown_action``).
    description, owner
        Free text for the registry.
    benchmarks
        Default snapshot/benchmark schedule of the type (fields of
        :class:`streamer.settings.BenchSettings`; ``STREAMER_BENCH__*`` overrides them).
        Not part of the manifest: changing the schedule never invalidates stored state.
    storage_codec
        How vectors are stored in the feature table and the output topic: ``float32``
        (exact), ``float16`` or ``int8`` (symmetric scalar quantisation with one float32
        scale per vector; :mod:`streamer.store.quant`). Fixed for the life of a table: a
        table written with another codec is refused (bump ``version`` to change it).
    ttl_s
        Time to live of a vector, in **event-time seconds**: a read reports an id as
        ``expired`` (never as fresh) when the type's watermark (the latest event time it
        applied) is more than ``ttl_s`` past the id's ``updated_at``. ``None``: no expiry.
        A read-time policy, not part of the manifest.
    """

    name: str
    algorithm: str
    params: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1
    source: str = "engagements"
    partition_key: str = "user_id"
    dead_letters: str = "engagements.deadletter"
    action_weights: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ACTION_WEIGHTS))
    description: str = ""
    owner: str = "streamer"
    benchmarks: Mapping[str, Any] = field(default_factory=dict)
    storage_codec: str = "float32"
    ttl_s: float | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            msg = f"type name {self.name!r} is invalid; expected lowercase letters, digits, '-'"
            raise ConfigError(msg)
        if not isinstance(self.version, int) or self.version < 1:
            msg = f"type {self.name!r}: version must be an int >= 1, got {self.version!r}"
            raise ConfigError(msg)
        if self.partition_key != "user_id":
            msg = (f"type {self.name!r}: partition_key {self.partition_key!r} is not supported; "
                   "engagements are keyed by 'user_id'")
            raise ConfigError(msg)
        if self.storage_codec not in ("float32", "float16", "int8"):
            msg = (f"type {self.name!r}: storage_codec {self.storage_codec!r} is unknown; "
                   "expected float32, float16 or int8")
            raise ConfigError(msg)
        ttl = self.ttl_s
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or not 0 < ttl < float("inf")):
            msg = f"type {self.name!r}: ttl_s must be a finite number > 0 or None, got {ttl!r}"
            raise ConfigError(msg)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "action_weights", MappingProxyType(dict(self.action_weights)))
        object.__setattr__(self, "benchmarks", MappingProxyType(dict(self.benchmarks)))

    @property
    def output_topic(self) -> str:
        """Compacted topic of changed vectors: ``embeddings.<name>.v<version>``."""
        return f"embeddings.{self.name}.v{self.version}"

    @property
    def app_id(self) -> str:
        """Faust app id and consumer group: ``streamer-<name>-v<version>``."""
        return f"streamer-{self.name}-v{self.version}"

    @property
    def state_dirname(self) -> str:
        """Folder name of this type/version's RocksDB path."""
        return f"{self.name}.v{self.version}"

    def manifest(self) -> dict[str, Any]:
        """Return the JSON-able identity of the type (stored in the feature table's meta)."""
        return {
            "name": self.name, "algorithm": self.algorithm, "params": dict(self.params),
            "version": self.version, "source": self.source,
            "action_weights": dict(self.action_weights),
        }

    def fingerprint(self) -> str:
        """Return a short hash of :meth:`manifest`; a table written under another one is refused."""
        blob = json.dumps(self.manifest(), sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=8).hexdigest()


def find_type(specs: tuple[TopologySpec, ...], name: str) -> TopologySpec:
    """Return the spec called ``name``.

    Raises
    ------
    UnknownType
        If no spec has that name; the message lists the declared types.
    """
    from streamer.errors import UnknownType

    for spec in specs:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in specs) or "(none)"
    msg = f"unknown embedding type {name!r}; declared types: {known}"
    raise UnknownType(msg)
