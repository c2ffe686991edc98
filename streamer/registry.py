"""Registry of embedding types: declared versions, the live one, retirements (DESIGN §5).

What is declared (code) and what is decided (operations) live in two places:

* **Declared types** are :class:`~streamer.topology.TopologySpec` values: the
  ``topologies`` package's ``TOPOLOGIES`` tuple plus any installed plug-in that
  exposes specs under the ``streamer.types`` entry-point group (an entry point
  loads a spec or an iterable of specs). Several versions of one name may be
  declared side by side (``wiki-cooc`` v1 and v2): each has its own consumer
  group, RocksDB path and ``embeddings.<name>.v<n>`` topic.
* **Decisions** (which version readers get, which versions are retired, when a
  version was first run) are records in the compacted ``registry`` topic, so every
  worker, CLI and ``streamer serve`` replica on any machine sees the same answer.
  Key ``<name>`` holds the alias record ``{"kind": "alias", "live_version": N}``;
  key ``<name>.v<N>`` holds the version record ``{"kind": "version", "status":
  "active"|"retired", "created_at": ...}``. Compaction keeps the latest of each.

A reference to a type is ``NAME`` (the live version) or ``NAME.vN`` (that version).
The live version of a name is the promoted one if a promotion was recorded and that
version is still declared and not retired, else the **lowest** declared version that
is not retired: declaring ``v2`` beside ``v1`` makes ``v2`` a *candidate* that can be
backfilled and benchmarked while readers keep ``v1``, until ``streamer types promote
NAME.v2`` switches them.
A promotion is one record, so readers switch atomically (a replica's alias map
flips in one assignment).

The design follows schema registries that keep their state in a compacted Kafka
topic (Confluent Schema Registry's ``_schemas``), and Feast's split between a
declared feature repository and a registry of applied objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from streamer.errors import (
    BadRequest,
    ConfigError,
    RegistryUnavailable,
    RetiredType,
    UnknownType,
)
from streamer.topology import TopologySpec

log = logging.getLogger(__name__)

#: Compacted topic of registry decisions (prefixed with ``STREAMER_TOPIC_PREFIX``).
REGISTRY_TOPIC = "registry"
#: Entry-point group under which installed packages declare embedding types.
ENTRY_POINT_GROUP = "streamer.types"

Status = Literal["live", "candidate", "retired"]
_REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]{0,62})(?:\.v(?P<version>[1-9][0-9]{0,8}))?$")


# --------------------------------------------------------------------------------------
# declared types


def declared_types(
    load: Callable[[], Iterable[Any]] | None = None,
) -> tuple[TopologySpec, ...]:
    """Return every declared type: ``topologies.TOPOLOGIES`` plus entry-point plug-ins.

    Parameters
    ----------
    load
        For tests: returns the plug-in objects instead of reading the
        ``streamer.types`` entry points (each a spec or an iterable of specs).

    Raises
    ------
    ConfigError
        If a plug-in gives something that is not a spec, fails to load, or two
        declarations share a name and version.
    """
    from topologies import TOPOLOGIES

    specs: list[TopologySpec] = list(TOPOLOGIES)
    objs: list[tuple[str, Any]] = []
    if load is not None:
        objs = [("test", o) for o in load()]
    else:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                objs.append((f"{ep.name} ({ep.value})", ep.load()))
            except Exception as exc:
                msg = (f"type plug-in {ep.name!r} ({ep.value}) failed to load: "
                       f"{type(exc).__name__}: {exc}")
                raise ConfigError(msg) from exc
    for where, obj in objs:
        items = [obj] if isinstance(obj, TopologySpec) else obj
        try:
            items = list(items)
        except TypeError:
            items = [items]
        for s in items:
            if not isinstance(s, TopologySpec):
                msg = (f"type plug-in {where} gave a {type(s).__name__}; expected a "
                       "TopologySpec or an iterable of them")
                raise ConfigError(msg)
            specs.append(s)
    seen: set[tuple[str, int]] = set()
    for s in specs:
        if (s.name, s.version) in seen:
            msg = f"type {s.name!r} version {s.version} is declared twice"
            raise ConfigError(msg)
        seen.add((s.name, s.version))
    return tuple(specs)


def first_versions(specs: Sequence[TopologySpec]) -> tuple[TopologySpec, ...]:
    """Return one spec per name, its lowest declared version (the default live one).

    Offline benchmarks key results by type name; they run these by default.
    """
    out: dict[str, TopologySpec] = {}
    for s in specs:
        if s.name not in out or s.version < out[s.name].version:
            out[s.name] = s
    return tuple(s for s in specs if out[s.name] is s)


def parse_ref(ref: object) -> tuple[str, int | None]:
    """Split ``NAME`` or ``NAME.vN`` into ``(name, version or None)``.

    Raises
    ------
    BadRequest
        If ``ref`` is neither form.
    """
    m = _REF_RE.match(ref) if isinstance(ref, str) else None
    if m is None:
        msg = (f"bad type reference {str(ref)[:80]!r}; expected NAME or NAME.vN with N >= 1 "
               "(no leading zeros), e.g. wiki-cooc or wiki-cooc.v2")
        raise BadRequest(msg)
    v = m.group("version")
    return m.group("name"), None if v is None else int(v)


# --------------------------------------------------------------------------------------
# pure state


@dataclass
class RegistryState:
    """Registry decisions folded from the ``registry`` topic (pure; no I/O).

    Attributes
    ----------
    aliases
        name -> the alias record (``live_version``, ``at`` wall seconds, ``by``).
    versions
        ``(name, version)`` -> the version record (``status``, ``created_at``...).
    """

    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    skipped: int = 0

    def apply(self, value: object) -> None:
        """Fold one record (a decoded JSON object); malformed ones are counted, not applied."""
        try:
            rec = check_record(value)
        except BadRequest as exc:
            self.skipped += 1
            log.warning("skipping a bad registry record: %s", exc)
            return
        if rec["kind"] == "alias":
            self.aliases[rec["name"]] = rec
        else:
            self.versions[(rec["name"], rec["version"])] = rec

    @classmethod
    def from_records(cls, values: Iterable[object]) -> RegistryState:
        """Fold records in log order."""
        state = cls()
        for v in values:
            state.apply(v)
        return state

    def retired(self, name: str, version: int) -> bool:
        """Return True if ``name`` v``version`` is retired."""
        rec = self.versions.get((name, version))
        return rec is not None and rec.get("status") == "retired"

    def created_at(self, name: str, version: int) -> float | None:
        """Return when the version was first run (wall seconds), if recorded."""
        rec = self.versions.get((name, version))
        return None if rec is None else rec.get("created_at")

    def live_version(self, name: str, declared: Sequence[int]) -> int | None:
        """Return the version readers of ``name`` get, or None if none is servable.

        The promoted version if one is recorded and still declared and not retired;
        else the lowest declared version that is not retired (a newly declared version
        is a candidate until promoted).
        """
        alias = self.aliases.get(name)
        if alias is not None:
            v = alias["live_version"]
            if v in declared and not self.retired(name, v):
                return v
        ok = [v for v in declared if not self.retired(name, v)]
        return min(ok) if ok else None

    def status(self, name: str, version: int, declared: Sequence[int]) -> Status:
        """Return ``live``, ``retired`` or ``candidate`` (declared, not live, not retired)."""
        if self.retired(name, version):
            return "retired"
        return "live" if self.live_version(name, declared) == version else "candidate"


def check_record(value: object) -> dict[str, Any]:
    """Validate a registry record (a JSON object); return it.

    Raises
    ------
    BadRequest
        Naming the first problem.
    """
    if not isinstance(value, Mapping):
        msg = f"registry record is a {type(value).__name__}; expected a JSON object"
        raise BadRequest(msg)
    rec = dict(value)
    kind = rec.get("kind")
    name = rec.get("name")
    if not isinstance(name, str) or not _REF_RE.match(name) or "." in name:
        msg = f"registry record has a bad name {name!r}"
        raise BadRequest(msg)
    key = "live_version" if kind == "alias" else "version"
    if kind not in ("alias", "version"):
        msg = f"registry record kind {kind!r}; expected 'alias' or 'version'"
        raise BadRequest(msg)
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        msg = f"registry record {key} {v!r}; expected an int >= 1"
        raise BadRequest(msg)
    if kind == "version" and rec.get("status") not in ("active", "retired"):
        msg = f"registry record status {rec.get('status')!r}; expected 'active' or 'retired'"
        raise BadRequest(msg)
    return rec


def record_key(rec: Mapping[str, Any]) -> str:
    """Return the Kafka key of a record: ``name`` (alias) or ``name.vN`` (version)."""
    if rec["kind"] == "alias":
        return str(rec["name"])
    return f"{rec['name']}.v{rec['version']}"


def versions_of(specs: Sequence[TopologySpec], name: str) -> list[int]:
    """Return the declared versions of ``name``, ascending."""
    return sorted(s.version for s in specs if s.name == name)


def resolve(specs: Sequence[TopologySpec], state: RegistryState | None, ref: str,
            *, allow_retired: bool = False) -> TopologySpec:
    """Return the spec a reference names.

    Parameters
    ----------
    specs
        Declared types (:func:`declared_types`).
    state
        Registry decisions, or None when the registry could not be read: then ``NAME``
        resolves only if exactly one version is declared.
    ref
        ``NAME`` (the live version) or ``NAME.vN``.
    allow_retired
        Whether a retired version may be named explicitly (reads of history).

    Raises
    ------
    BadRequest
        Malformed reference, or ``NAME`` is ambiguous without the registry.
    UnknownType
        No such name or version; the message lists what is declared.
    RetiredType
        The version is retired (and ``allow_retired`` is False), or every version is.
    """
    name, version = parse_ref(ref)
    declared = versions_of(specs, name)
    if not declared:
        known = ", ".join(sorted({s.name for s in specs})) or "(none)"
        msg = f"unknown embedding type {name!r}; declared types: {known}"
        raise UnknownType(msg)
    if version is None:
        if state is None:
            if len(declared) > 1:
                msg = (f"type {name!r} declares versions {declared} and the registry could "
                       f"not be read to tell the live one; name one, e.g. {name}.v{declared[-1]}")
                raise BadRequest(msg)
            version = declared[0]
        else:
            live = state.live_version(name, declared)
            if live is None:
                msg = (f"every version of {name!r} ({declared}) is retired; promote one "
                       f"with `streamer types promote {name}.vN`")
                raise RetiredType(msg)
            version = live
    elif version not in declared:
        msg = f"unknown version {version} of type {name!r}; declared versions: {declared}"
        raise UnknownType(msg)
    if not allow_retired and state is not None and state.retired(name, version):
        msg = (f"{name}.v{version} is retired; use the live version ({name}) or promote "
               f"it back with `streamer types promote {name}.v{version}`")
        raise RetiredType(msg)
    return next(s for s in specs if s.name == name and s.version == version)


def save_cache(state: RegistryState, path: Path) -> None:
    """Write the registry decisions to ``path`` (JSON list of records; atomic rename)."""
    recs = [*state.aliases.values(), *state.versions.values()]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(recs, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a cache: never fail the command for it
        log.warning("cannot write the registry cache %s: %s", path, exc)


def load_cache(path: Path) -> RegistryState | None:
    """Return the cached registry decisions, or None if there is no readable cache."""
    try:
        recs = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return RegistryState.from_records(recs) if isinstance(recs, list) else None


def resolve_ref(bootstrap: str, registry_topic: str, ref: str, *,
                allow_retired: bool = True,
                specs: Sequence[TopologySpec] | None = None,
                cache: Path | None = None) -> TopologySpec:
    """Resolve ``ref`` for a command, reading the registry only when it must.

    ``NAME.vN``, or ``NAME`` with one declared version, resolve without Kafka (offline
    commands keep working without a broker); ``NAME`` with several declared versions
    asks the registry which one is live. With ``cache`` (a JSON file under the state
    dir), each successful read is saved there, and an unreachable registry falls back to
    the last decisions saved (then to the default rule), with a warning.

    Raises
    ------
    BadRequest, UnknownType, RetiredType
        As :func:`resolve` (BadRequest also when the registry is needed but unreachable).
    """
    specs = declared_types() if specs is None else specs
    name, version = parse_ref(ref)
    declared = versions_of(specs, name)
    if version is not None or len(declared) < 2:
        return resolve(specs, None, ref, allow_retired=allow_retired)
    try:
        with _quiet_kafka():
            state = read_registry(bootstrap, registry_topic, timeout_s=3.0)
    except RegistryUnavailable as exc:
        cached = None if cache is None else load_cache(cache)
        # the default rule without decisions: the lowest version
        spec = resolve(specs, cached or RegistryState(), ref, allow_retired=allow_retired)
        why = ("the registry decisions last seen" if cached is not None
               else "the default live version, with no registry decision known")
        log.warning("%s; using %s.v%d (%s); name a version (%s.vN) to choose",
                    exc, name, spec.version, why, name)
        return spec
    if cache is not None:
        save_cache(state, cache)
    return resolve(specs, state, ref, allow_retired=allow_retired)


def expand_refs(specs: Sequence[TopologySpec], refs: Iterable[str]) -> list[TopologySpec]:
    """Return the specs ``refs`` name: ``NAME`` -> every declared version, ``NAME.vN`` -> one.

    Raises
    ------
    BadRequest, UnknownType
        For a malformed or unknown reference.
    """
    out: list[TopologySpec] = []
    for ref in refs:
        name, version = parse_ref(ref)
        wanted = ([resolve(specs, None, ref, allow_retired=True)] if version is not None
                  else [s for s in specs if s.name == name])
        if not wanted:
            resolve(specs, None, ref)  # raises UnknownType listing the declared types
        out += [s for s in wanted if s not in out]
    return out


class _quiet_kafka:  # noqa: N801 - used as a context manager
    """Silence kafka-python's connection-retry logging while probing the registry."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("kafka")
        self._level = self._logger.level
        self._logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def promote_records(state: RegistryState, spec: TopologySpec, *, now: float,
                    by: str = "cli") -> list[dict[str, Any]]:
    """Return the records that make ``spec``'s version the live one.

    A retired version is made active again first. ``now`` is wall seconds (the
    caller's injectable clock).
    """
    out: list[dict[str, Any]] = []
    rec = state.versions.get((spec.name, spec.version))
    if rec is None or rec.get("status") == "retired":
        out.append(version_record(spec, "active", now=now, by=by,
                                  created_at=None if rec is None else rec.get("created_at")))
    prev = state.aliases.get(spec.name, {}).get("live_version")
    out.append({"kind": "alias", "name": spec.name, "live_version": spec.version,
                "previous": prev, "at": now, "by": by})
    return out


def version_record(spec: TopologySpec, status: Literal["active", "retired"], *, now: float,
                   by: str = "cli", created_at: float | None = None) -> dict[str, Any]:
    """Return a version record (``created_at`` kept from an earlier record when given)."""
    return {"kind": "version", "name": spec.name, "version": spec.version, "status": status,
            "created_at": now if created_at is None else created_at, "at": now, "by": by,
            "fingerprint": spec.fingerprint()}


def retire_record(state: RegistryState, specs: Sequence[TopologySpec], spec: TopologySpec,
                  *, now: float, by: str = "cli") -> dict[str, Any]:
    """Return the record retiring ``spec``'s version.

    Raises
    ------
    BadRequest
        If it is the live version (promote another first) or already retired.
    """
    declared = versions_of(specs, spec.name)
    if state.retired(spec.name, spec.version):
        msg = f"{spec.name}.v{spec.version} is already retired"
        raise BadRequest(msg)
    if state.live_version(spec.name, declared) == spec.version:
        others = [v for v in declared if v != spec.version and not state.retired(spec.name, v)]
        hint = (f"promote another first, e.g. `streamer types promote {spec.name}.v{others[-1]}`"
                if others else "it is the only servable version")
        msg = f"{spec.name}.v{spec.version} is the live version; {hint}"
        raise BadRequest(msg)
    return version_record(spec, "retired", now=now, by=by,
                          created_at=state.created_at(spec.name, spec.version))


# --------------------------------------------------------------------------------------
# registry entries (what `types list|describe` and GET /v1/types show)


def half_lives(spec: TopologySpec) -> dict[str, float]:
    """Return the spec's half-life parameters (event-time seconds), by parameter name."""
    return {k: float(v) for k, v in spec.params.items()
            if "half_life" in k and isinstance(v, int | float) and not isinstance(v, bool)}


def entry(spec: TopologySpec, specs: Sequence[TopologySpec], state: RegistryState | None,
          *, dim: int | None = None, freshness: Mapping[str, Any] | None = None,
          scores: Mapping[str, Any] | None = None,
          consumer_group: str | None = None) -> dict[str, Any]:
    """Return the JSON-able registry entry of one type version.

    Parameters
    ----------
    spec, specs, state
        The version, every declared spec, and the registry decisions (None: unknown).
    dim
        Vector dimension if known (else built from the learner).
    freshness
        ``last_event_ts`` (event seconds), ``lag`` (records behind the source's end
        offsets), ``caught_up``... as measured by the caller.
    scores
        Latest benchmark scores ``{"task[:dataset].metric": value}``.
    consumer_group
        The worker's actual group (:func:`consumer_group_of` with the settings);
        default ``spec.app_id``.
    """
    declared = versions_of(specs, spec.name)
    status: str = "unknown" if state is None else state.status(spec.name, spec.version,
                                                                  declared)
    return {
        "name": spec.name, "version": spec.version, "ref": f"{spec.name}.v{spec.version}",
        "status": status,
        "entity_kinds": ["user", "item"],
        "algorithm": spec.algorithm, "params": dict(spec.params),
        "dim": _dim(spec) if dim is None else dim,
        "half_life_s": half_lives(spec),
        "source_topics": [spec.source], "output_topic": spec.output_topic,
        "consumer_group": consumer_group or spec.app_id,
        "owner": spec.owner, "description": spec.description,
        "storage_codec": spec.storage_codec, "ttl_s": spec.ttl_s,
        "created_at": None if state is None else state.created_at(spec.name, spec.version),
        "fingerprint": spec.fingerprint(),
        "versions": [{"version": v, "status": "unknown" if state is None
                      else state.status(spec.name, v, declared)} for v in declared],
        "freshness": dict(freshness or {}),
        "latest_scores": dict(scores or {}),
    }


def _dim(spec: TopologySpec) -> int:
    from streamer.transfer import type_dim

    return type_dim(spec)


def latest_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Return the latest value of each ``task[:dataset].metric`` from benchmark records.

    ``records`` are ``results.jsonl`` / ``benchmarks``-topic records in log order;
    only ``kind == "result"`` ones count, and only finite numeric metrics.
    """
    out: dict[str, float] = {}
    for r in records:
        if r.get("kind") != "result":
            continue
        task = r.get("task")
        key = task if not r.get("dataset") else f"{task}:{r['dataset']}"
        for m, v in (r.get("metrics") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[f"{key}.{m}"] = float(v)
    return out


# --------------------------------------------------------------------------------------
# Kafka I/O


def read_registry(bootstrap: str, topic: str, *, timeout_s: float = 10.0,
                  quiet: bool = False) -> RegistryState:
    """Read the whole ``registry`` topic (no consumer group) and fold it.

    A missing topic is an empty registry. ``quiet`` silences kafka-python's
    connection-retry log meanwhile (the error raised says what failed).

    Raises
    ------
    RegistryUnavailable
        If the broker cannot be reached or the read does not finish in ``timeout_s``.
    """
    from streamer.kafka_io import KafkaIOError, consume_all, topic_partition_counts

    try:
        with _quiet_kafka() if quiet else contextlib.nullcontext():
            if topic not in topic_partition_counts(bootstrap, [topic], timeout_s=timeout_s):
                return RegistryState()
            records = consume_all(bootstrap, topic, timeout_s=timeout_s)
    except (KafkaIOError, ConfigError) as exc:
        msg = f"cannot read the registry topic {topic!r} on {bootstrap!r}: {exc}"
        raise RegistryUnavailable(msg) from exc
    values = []
    for r in records:
        if r.value is None:
            continue
        try:
            values.append(json.loads(r.value))
        except ValueError:
            values.append(None)  # counted as skipped
    return RegistryState.from_records(values)


def ensure_registry_topic(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> None:
    """Create the compacted one-partition registry topic if missing.

    Raises
    ------
    KafkaIOError, ConfigError
        As :func:`streamer.kafka_io.ensure_topics`.
    """
    from streamer.kafka_io import TopicSpec, ensure_topics

    ensure_topics(bootstrap, {topic: TopicSpec(
        partitions=1, configs={"cleanup.policy": "compact", "retention.ms": "-1"})},
        timeout_s=timeout_s)


def publish_records(bootstrap: str, topic: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Append records to the registry topic (created if missing) and wait for the acks.

    Raises
    ------
    KafkaIOError
        If the broker cannot be reached or a record is not acknowledged.
    """
    from streamer.kafka_io import SyncProducer

    for r in records:
        check_record(r)
    ensure_registry_topic(bootstrap, topic)
    with SyncProducer(bootstrap) as producer:
        for r in records:
            producer.send(topic, json.dumps(r, sort_keys=True).encode(),
                          key=record_key(r).encode())
        producer.flush(30.0)


def register_version(bootstrap: str, topic: str, spec: TopologySpec, *,
                     clock: Callable[[], float] = time.time, timeout_s: float = 15.0) -> None:
    """Record that ``spec``'s version runs (``created_at``), once; refuse a retired one.

    Called by a worker before it consumes.

    Raises
    ------
    RetiredType
        If the version is retired.
    RegistryUnavailable, KafkaIOError
        If the registry cannot be read or written.
    """
    with _quiet_kafka():  # an unreachable broker: our one-line error, not its retry log
        ensure_registry_topic(bootstrap, topic, timeout_s=timeout_s)
        state = read_registry(bootstrap, topic, timeout_s=timeout_s)
    if state.retired(spec.name, spec.version):
        msg = (f"{spec.name}.v{spec.version} is retired; promote it back with "
               f"`streamer types promote {spec.name}.v{spec.version}` to run it again")
        raise RetiredType(msg)
    if (spec.name, spec.version) not in state.versions:
        publish_records(bootstrap, topic, [version_record(spec, "active", now=clock(),
                                                          by="worker")])


def consumer_group_of(spec: TopologySpec, template: str | None, prefix: str = "") -> str:
    """Return the worker's consumer group (also its faust app id).

    ``template`` (``STREAMER_CONSUMER_GROUP``) with ``{type}`` and ``{version}``
    replaced, else ``<prefix>streamer-<type>-v<version>``.
    """
    if template:
        return template.replace("{type}", spec.name).replace("{version}", str(spec.version))
    return f"{prefix}{spec.app_id}"


def consumer_lag(bootstrap: str, group: str, source_topic: str, *,
                 timeout_s: float = 5.0) -> dict[str, Any]:
    """Return the type's consumer-group lag on its source topic, in records.

    Lag of a partition = its end offset minus the offset the consumer group
    (``spec.app_id``) committed; a partition the group never committed counts in
    full, as ``kafka-consumer-groups.sh --describe`` would show it. ``group`` is the
    worker's group (:func:`consumer_group_of`).

    Returns
    -------
    dict
        ``{"lag": int | None, "partitions": {partition: lag}}``; ``lag`` is None and
        ``error`` says why when the broker cannot be asked within ``timeout_s``
        (wall seconds). Never raises for Kafka errors.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from streamer.kafka_io import KafkaIOError, end_offsets

    timeout_ms = int(timeout_s * 1000)
    try:
        ends = end_offsets(bootstrap, source_topic, timeout_s=timeout_s)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="streamer-registry",
                                 request_timeout_ms=timeout_ms,
                                 bootstrap_timeout_ms=timeout_ms)
        try:
            if hasattr(admin, "list_group_offsets"):  # kafka-python >= 3
                committed = admin.list_group_offsets({group: None}).get(group, {})
            else:
                committed = admin.list_consumer_group_offsets(group)
        finally:
            admin.close()
    except (KafkaError, KafkaIOError, ConfigError) as exc:
        return {"lag": None, "partitions": {}, "error": f"{type(exc).__name__}: {exc}"}
    parts: dict[int, int] = {}
    for p, end in ends.items():
        off = next((o.offset for tp, o in committed.items()
                    if tp.topic == source_topic and tp.partition == p), -1)
        parts[p] = int(end if off is None or off < 0 else max(0, end - off))
    return {"lag": sum(parts.values()), "partitions": parts, "group": group}
