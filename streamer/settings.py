"""Runtime settings (pydantic-settings, ``STREAMER_`` prefix, nested with ``__``; CONVENTIONS C4).

Built once in the CLI and passed down; core classes take plain keyword arguments.
Example: ``STREAMER_INDEX__EF_SEARCH=128 streamer serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IndexSettings(BaseModel):
    """HNSW index parameters (hnswlib) and its delta buffer (DESIGN §4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    m: int = Field(16, ge=4, le=64, description="HNSW graph degree M (memory ~ M)")
    ef_construction: int = Field(100, ge=16, description="HNSW build-time beam width")
    ef_search: int = Field(64, ge=1, description="query-time beam width (recall/latency knob)")
    initial_capacity: int = Field(4096, ge=1, description="initial slots; grows geometrically")
    delta_max: int = Field(8192, ge=1, description="fresh vectors kept in the exact delta "
                           "buffer (>= the hot set of ids updated within seconds)")
    background: bool = Field(True, description="fold the delta buffer and rebuild in a "
                             "background thread (never inside an upsert)")

    def hnsw_params(self) -> dict[str, object]:
        """Return keyword arguments for :class:`streamer.index.hnsw.HnswIndex`."""
        return self.model_dump()


class WorkerSettings(BaseModel):
    """Worker micro-batching and consumer settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    batch_max: int = Field(2000, ge=1, description="max events per micro-batch (faust take())")
    batch_within_s: float = Field(0.05, gt=0, description="max wait (wall s) to fill a "
                                  "batch; bounds freshness (benchmarks/e2e.py)")
    session_timeout_s: float = Field(30.0, gt=0, description="consumer group session timeout")
    heartbeat_interval_s: float = Field(3.0, gt=0, description="consumer heartbeat interval")
    web_port: int = Field(6066, ge=0, le=65535, description="worker health/metrics port (0: off)")
    publish: bool = Field(True, description="publish changed vectors to embeddings.<type>.v<n>")
    index: bool = Field(False, description="also keep a live HNSW index in the worker "
                        "(reader replicas `streamer serve` keep theirs; on 2 cores the "
                        "worker's own index halves freshness, see benchmarks/e2e.py)")
    changelog: bool = Field(True, description="mirror each partition's learner state to the "
                            "compacted <group>-changelog topic (Kafka transactions), so a "
                            "partition's state moves with it when workers scale out or die; "
                            "partition-scoped algorithms only (cooc), ignored for sgns")


DEFAULT_DRIFT: dict[str, object] = {"rules": [
    # a cold learner's per-batch score climbs while it learns: not the reference mean
    {"match": "prequential.*", "warmup": 50},
    # the number of ids two snapshots share grows with the vocabulary: not a quality metric
    {"match": "*.n_common", "detectors": []},
    {"match": "*"},
]}
"""Default drift rules: both detectors (ADWIN, Page-Hinkley) on every series, bad
direction guessed from the metric name (benchmarks/drift.py measures the delays)."""


class BenchSettings(BaseModel):
    """Snapshots, scheduled benchmark tasks and drift detection in the worker (DESIGN §7).

    A type declares its defaults in ``TopologySpec.benchmarks``; an env var
    ``STREAMER_BENCH__<FIELD>`` set for a worker overrides that field for it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    snapshot_every_events: int | None = Field(
        None, ge=0, description="snapshot after this many accepted events (None or 0: off)")
    snapshot_every_event_s: float | None = Field(
        None, ge=0, description="snapshot when event time advanced this many seconds since "
        "the last snapshot (None or 0: off)")
    snapshot_retain: int = Field(10, ge=1, description="snapshots kept per type (older pruned)")
    snapshot_dir: Path | None = Field(None, description="snapshot root (default "
                                      "<state_dir>/snapshots)")
    tasks: tuple[str, ...] = Field(
        (), description="tasks run on each snapshot: 'stability', 'topic:<dataset>', "
        "'metadata:<dataset>', 'follow-jaccard:<dataset>' (JSON list in the env var)")
    prequential: bool = Field(True, description="score a sample of each mini-batch before "
                              "learning it (the drift detectors' per-batch series)")
    prequential_sample: int = Field(64, ge=1, description="events scored per mini-batch")
    prequential_negatives: int = Field(100, ge=1, description="sampled negative items per "
                                       "scored event (uniform over items seen so far)")
    seed: int = Field(0, description="seed of every sample drawn by the scheduler and tasks")
    drift: dict[str, object] = Field(
        default_factory=lambda: dict(DEFAULT_DRIFT), description="drift detector config "
        "(streamer.bench.drift.DriftConfig, JSON in the env var)")

    @property
    def enabled(self) -> bool:
        """True when snapshots are scheduled or per-batch scores are kept."""
        return bool(self.snapshot_every_events) or bool(self.snapshot_every_event_s)


class Settings(BaseSettings):
    """All runtime settings. Every field has an env var ``STREAMER_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("", pattern=r"^[A-Za-z0-9._-]*$",
                              description="prefix of every topic name (tenancy, tests)")
    consumer_group: str | None = Field(
        None, description="override the worker's consumer group (default streamer-<type>-v<n>;"
        " '{type}' and '{version}' are replaced, e.g. 'team-a-{type}-v{version}')")
    state_dir: Path = Field(Path("var/state"), description="root of RocksDB paths (type.vN)")
    data_dir: Path | None = Field(None, description="data sets folder (default ../shared/data)")
    engagements_partitions: int = Field(4, ge=1, description="partitions of `engagements`")
    max_future_s: float = Field(86_400.0, gt=0, description="reject events this far ahead (s)")
    dedup_window_s: float = Field(86_400.0, ge=0, description="event_id dedup window (event s)")
    api_host: str = Field("127.0.0.1", description="HTTP API bind address")
    api_port: int = Field(8080, ge=0, le=65535, description="HTTP API port")
    api_token: str | None = Field(None, description="bearer token required by the API if set")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    index: IndexSettings = IndexSettings()
    worker: WorkerSettings = WorkerSettings()
    bench: BenchSettings = BenchSettings()

    @field_validator("state_dir")
    @classmethod
    def _state_dir_is_a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            msg = (f"{str(value)!r} exists and is not a directory; expected a directory "
                   "(created if missing) for the RocksDB tables")
            raise ValueError(msg)
        return value

    def bench_for(self, spec_defaults: dict[str, object]) -> BenchSettings:
        """Return the type's declared bench defaults overridden by explicitly set fields.

        Raises
        ------
        ConfigError
            If the merged settings are invalid (one line naming the field).
        """
        from pydantic import ValidationError

        from streamer.errors import ConfigError

        explicit = {k: getattr(self.bench, k) for k in self.bench.model_fields_set}
        try:
            return BenchSettings(**{**spec_defaults, **explicit})
        except ValidationError as exc:
            err = exc.errors()[0]
            msg = (f"bench setting {'.'.join(str(x) for x in err['loc'])}: {err['msg']} "
                   f"(got {err.get('input')!r})")
            raise ConfigError(msg) from None

    def topic(self, name: str) -> str:
        """Return the topic name with :attr:`topic_prefix` applied."""
        return f"{self.topic_prefix}{name}"
