"""Temporal link prediction, TGB protocol, one-vs-all (DESIGN §7, issue 4).

Protocol (Huang et al., "Temporal Graph Benchmark for Machine Learning on Temporal
Graphs", NeurIPS 2023; code ``tgb/linkproppred`` and ``examples/linkproppred/tgbl-wiki``):

1. **Chronological split by event time.** ``val_time, test_time = quantile(ts, [1 -
   val_frac - test_frac, 1 - test_frac])`` (numpy's default linear interpolation, as TGB's
   ``generate_splits``); train = ``ts <= val_time``, validation = ``val_time < ts <=
   test_time``, test = ``ts > test_time``. Events sharing a timestamp never straddle a
   boundary.
2. **Train** events are learned (in chunks of :data:`TRAIN_CHUNK`; learners are
   batch-boundary invariant), never scored.
3. **Score-then-learn** over validation, then test (the same scorer continues, so the
   memory that scores test holds every validation event), in batches of ``batch_size``
   events (TGB: 200) that restart at the test boundary: every event of a batch is scored
   with the state after the previous batch, then the batch is learned.
4. **Ranking.** The true destination is ranked against every other destination of the
   data set (the 1,000 pages for Wikipedia; every node, sender or recipient, for the
   user->user sets CollegeMsg and Enron), ties given the mean of the optimistic and
   pessimistic rank (TGB ``Evaluator.eval_rnk_metrics``). TGB ranks against pre-sampled
   negatives; on Wikipedia our EdgeBank numbers equal TGB's published ``tgbl-wiki-v2``
   ones to three decimals (below), which a very different negative set would not give.
5. **Metrics.** MRR and Recall@k (rank <= k), overall and split into *repeat* events (the
   (user, destination) pair occurred earlier in the stream, in any split, including
   earlier in the same batch) and *new* events (first occurrence of the pair).

Baselines, all computed by the same harness (:func:`baseline_scorers`):

* ``edgebank_inf``: EdgeBank with unlimited memory (Poursafaei et al., "Towards Better
  Evaluation for Dynamic Link Prediction", NeurIPS 2022 Datasets & Benchmarks): 1 for a
  pair ever seen, else 0.
* ``edgebank_tw``: EdgeBank with a time window (same paper; TGB's ``EdgeBankPredictor``
  ``fixed_time_window``): 1 for a pair last seen at or after ``now - window``, where
  ``now`` is the latest event time learned so far (the end of the previous batch, not
  the scored event's own time). By default the window is the duration of the test
  period, ``max(ts) - test_time`` (issue 4, DESIGN §7); ``edgebank_window="tgb"`` uses
  TGB's code instead: 0.15 x the time span of the train split (the events the bank is
  initialised with). On Wikipedia the first gives test MRR 0.562, the second 0.571 (TGB
  publishes 0.571 for ``tgbl-wiki-v2``; EdgeBank-inf gives 0.4947 here, 0.495 there).
* ``popularity``: the destination's event count so far, undecayed
  (:class:`~streamer.eval.prequential.Popularity` with ``half_life_s=None``, the
  classic baseline). The user is ignored.
* ``popularity_recent``: the same count exponentially decayed in event time (a
  "trending" count), its half-life chosen on the validation split among
  :data:`POPULARITY_HALF_LIVES_S` by MRR (reported under ``"selected"``). It is the
  stronger popularity baseline, reported beside the classic one.
* ``recency``: per user, destinations ordered by the time the user last engaged with
  them (most recent first); destinations the user never engaged with tie at the bottom.

Information regimes. The default (``batch_size=200``) is TGB's protocol for
memory-based models (TGN, DyRep, EdgeBank): an event is scored knowing only the batches
before its own. Models evaluated through DyGLib's code on the TGB leaderboard (DyGFormer,
TPNet) instead read every interaction strictly before the query time from a neighbour
sampler built on the whole stream (DyGLib ``utils.NeighborSampler.find_neighbors_before``),
so they also see the earlier events of the query's own batch. ``per_event=True``
reproduces that regime (each run of events sharing one timestamp is scored, then learned);
on Wikipedia per-user recency scores test MRR 0.725 at batch 200 and 0.817 per event,
next to the leaderboard's "recency/popularity heuristic" at 0.821, so leaderboard numbers
of those models are to be compared with per-event numbers.

Embedding types (the lowest declared version of each, ``registry.first_versions``) are
trained fresh in-process from their
declared ``algorithm`` and ``params`` and scored by their learner's ``score_matrix`` (the
co-occurrence type combines vector similarity with the decayed user-item affinity and a
popularity prior it keeps; see :meth:`~streamer.learn.cooccurrence.DecayedCooccurrence.
score_matrix`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamer.bench.results import TaskResult
from streamer.datasets import load_events
from streamer.errors import BadRequest, ConfigError
from streamer.eval.prequential import Popularity, Scorer, tie_averaged_ranks
from streamer.learn.base import EventBatch
from streamer.topology import TopologySpec
from streamer.types import EntityId, item_key, user_key

__all__ = [
    "BASELINES",
    "LINKPRED_DATASETS",
    "POPULARITY_HALF_LIVES_S",
    "EdgeBank",
    "LinkPredStream",
    "Recency",
    "SplitMetrics",
    "baseline_scorers",
    "evaluate_scorer",
    "evaluate_scorers",
    "load_linkpred_stream",
    "run_linkpred",
    "split_points",
    "to_task_results",
]

#: Data sets the task supports -> how candidates are chosen: ``"items"`` (every distinct
#: destination; Wikipedia's 1,000 pages) or ``"nodes"`` (user->user sets: every id seen
#: as a sender or a recipient).
LINKPRED_DATASETS: Final[Mapping[str, str]] = {
    "wikipedia": "items", "collegemsg": "nodes", "enron": "nodes",
}

#: Baseline names, in report order (the issue's four, then ``popularity_recent``).
BASELINES: Final = ("edgebank_inf", "edgebank_tw", "popularity", "recency",
                    "popularity_recent")

#: Half-lives (event seconds) ``popularity_recent`` chooses from on validation.
POPULARITY_HALF_LIVES_S: Final = (3_600.0, 6 * 3_600.0, 86_400.0, 7 * 86_400.0)

#: Events per ``learn_many`` call while learning the (unscored) train split.
TRAIN_CHUNK: Final = 5_000

PROTOCOL: Final = (
    "TGB temporal link prediction, one-vs-all: chronological split at the {q1}%/{q2}% "
    "event-time quantiles; train learned, not scored; score-then-learn {steps} over "
    "validation then test; true destination ranked against all {nc} candidate "
    "destinations, ties = mean of optimistic and pessimistic rank; MRR and Recall@{k}; "
    "repeat = pair seen earlier in the stream"
)


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class LinkPredStream:
    """A time-ordered event stream with its split and candidates.

    Attributes
    ----------
    name
        Data-set name (free text for hand-made streams).
    events
        All events in time order (raw ids), one :class:`EventBatch`.
    candidates
        Raw destination ids every scored event is ranked against, in a fixed order.
    n_train, n_val_end
        Events ``[0, n_train)`` are train, ``[n_train, n_val_end)`` validation,
        ``[n_val_end, n)`` test.
    val_time, test_time
        Split times (event seconds): train ``ts <= val_time`` < validation ``ts <=
        test_time`` < test.
    repeat
        Shape ``(n,)`` bool: the event's (user, destination) pair occurred earlier in the
        stream.
    """

    name: str
    events: EventBatch
    candidates: tuple[str, ...]
    n_train: int
    n_val_end: int
    val_time: float
    test_time: float
    repeat: npt.NDArray[np.bool_]

    @property
    def test_span_s(self) -> float:
        """Duration of the test period, ``max(ts) - test_time`` (event seconds)."""
        return float(self.events.ts[-1] - self.test_time) if len(self.events) else 0.0

    @property
    def train_span_s(self) -> float:
        """Duration of the train period, ``val_time - min(ts)`` (event seconds)."""
        return float(self.val_time - self.events.ts[0]) if len(self.events) else 0.0

    @classmethod
    def from_events(
        cls,
        name: str,
        events: EventBatch,
        *,
        candidates: Sequence[str] | None = None,
        val_frac: float = 0.15,
        test_frac: float = 0.15,
    ) -> LinkPredStream:
        """Split a stream chronologically and mark repeat events.

        Parameters
        ----------
        name
            Label of the stream.
        events
            Events in stream order; they are stably sorted by ``ts`` if they are not.
        candidates
            Raw destination ids to rank against; default: every distinct ``item_id``
            (kept in first-seen order). Every validation/test destination must be one.
        val_frac, test_frac
            Fractions of events (by event-time quantile, :func:`split_points`).

        Returns
        -------
        LinkPredStream

        Raises
        ------
        BadRequest
            If the fractions are out of range, the stream is empty, there are no
            candidates, a scored destination is not a candidate, or ``ts`` is not finite.
        """
        if len(events) == 0:
            msg = "link prediction needs a non-empty event stream, got 0 events"
            raise BadRequest(msg)
        ts = np.asarray(events.ts, np.float64)
        if not np.all(np.isfinite(ts)):
            msg = "link prediction needs finite event times (seconds), got NaN/inf"
            raise BadRequest(msg)
        if np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            events = EventBatch(
                [events.user_ids[j] for j in order.tolist()],
                [events.item_ids[j] for j in order.tolist()],
                events.weights[order], ts[order], events.partitions[order],
                events.offsets[order], [events.actions[j] for j in order.tolist()])
            ts = events.ts
        val_time, test_time = split_points(ts, val_frac, test_frac)
        n_train = int(np.searchsorted(ts, val_time, side="right"))
        n_val_end = int(np.searchsorted(ts, test_time, side="right"))
        cands = tuple(dict.fromkeys(events.item_ids) if candidates is None else candidates)
        if not cands or len(set(cands)) != len(cands):
            msg = f"candidates must be non-empty and distinct, got {len(cands)} ids"
            raise BadRequest(msg)
        known = set(cands)
        missing = next((i for i in events.item_ids[n_train:] if i not in known), None)
        if missing is not None:
            msg = f"scored destination {missing!r} is not among the {len(cands)} candidates"
            raise BadRequest(msg)
        seen: set[tuple[str, str]] = set()
        repeat = np.zeros(len(events), np.bool_)
        for j, pair in enumerate(zip(events.user_ids, events.item_ids, strict=True)):
            if pair in seen:
                repeat[j] = True
            else:
                seen.add(pair)
        return cls(name, events, cands, n_train, n_val_end, float(val_time), float(test_time),
                   repeat)


def split_points(ts: npt.ArrayLike, val_frac: float = 0.15,
                 test_frac: float = 0.15) -> tuple[float, float]:
    """Return TGB's split times ``(val_time, test_time)``.

    Parameters
    ----------
    ts
        Shape ``(n,)`` event times (seconds), any order.
    val_frac, test_frac
        Fractions of events in validation and test: each ``> 0``, sum ``< 1``.

    Returns
    -------
    tuple of float
        ``numpy.quantile(ts, [1 - val_frac - test_frac, 1 - test_frac])``: train is
        ``ts <= val_time``, validation ``val_time < ts <= test_time``, test ``ts >
        test_time`` (TGB ``generate_splits``; DyGLib's ``get_link_prediction_data``).

    Raises
    ------
    BadRequest
        If a fraction is out of range or ``ts`` is empty.

    Notes
    -----
    TGB's own ``EdgeBankPredictor`` (``modules/edgebank_predictor.py``) sets the
    ``fixed_time_window`` length to ``time_window_ratio`` (0.15) of the span of the
    events it is initialised with (the train split), not the test span; on Wikipedia
    that is 3.2 days against a 5.3-day test span. See the report of issue 4 for the MRR
    each gives.

    Examples
    --------
    >>> split_points(np.arange(21.0))
    (14.0, 17.0)
    """
    for name, v in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not (isinstance(v, int | float) and 0 < v < 1):
            msg = f"{name} must be a number in (0, 1), got {v!r}"
            raise BadRequest(msg)
    if not val_frac + test_frac < 1:
        msg = f"val_frac + test_frac must be < 1, got {val_frac} + {test_frac}"
        raise BadRequest(msg)
    t = np.asarray(ts, np.float64)
    if t.size == 0:
        msg = "split_points needs at least one event time, got none"
        raise BadRequest(msg)
    v, s = np.quantile(t, [1.0 - val_frac - test_frac, 1.0 - test_frac])
    return float(v), float(s)


def load_linkpred_stream(
    dataset: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
) -> LinkPredStream:
    """Load one of :data:`LINKPRED_DATASETS` as a split :class:`LinkPredStream`.

    Candidates: Wikipedia's distinct pages; for CollegeMsg and Enron (user->user) every
    node id seen as a sender or a recipient, in first-seen order.

    Raises
    ------
    ConfigError
        If the data set is not supported or its file is missing/malformed.
    BadRequest
        If the fractions are out of range.
    """
    mode = LINKPRED_DATASETS.get(dataset)
    if mode is None:
        msg = (f"link prediction data set {dataset!r} is not supported; expected one of: "
               f"{', '.join(LINKPRED_DATASETS)}")
        raise ConfigError(msg)
    split_points([0.0], val_frac, test_frac)  # validate fractions before reading
    users: list[str] = []
    items: list[str] = []
    ts: list[float] = []
    weights: list[float] = []
    for e in load_events(dataset, data_dir):
        users.append(e.user_id)
        items.append(e.item_id)
        ts.append(e.ts)
        weights.append(e.weight)
    n = len(users)
    batch = EventBatch(users, items, np.asarray(weights, np.float32), np.asarray(ts, np.float64),
                       np.zeros(n, np.int32), np.arange(n, dtype=np.int64), [""] * n)
    cands: list[str] | None = None
    if mode == "nodes":
        cands = list(dict.fromkeys(x for pair in zip(users, items, strict=True) for x in pair))
    return LinkPredStream.from_events(dataset, batch, candidates=cands, val_frac=val_frac,
                                      test_frac=test_frac)


# ---------------------------------------------------------------------- baselines
class _ColumnCache:
    """Remembers the column of each candidate id for the last candidate list seen.

    The harness passes the same list object on every call, so the mapping is built once.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._items: Sequence[EntityId] = ()
        self._index: dict[EntityId, int] = {}

    def index(self, items: Sequence[EntityId]) -> dict[EntityId, int]:
        """Return ``{id: column}`` for ``items``."""
        key = (id(items), len(items))
        if key != self._key or self._items is not items:
            self._index = {k: j for j, k in enumerate(items)}
            self._key, self._items = key, items
        return self._index


class _Popularity(Popularity):
    """:class:`~streamer.eval.prequential.Popularity` with a vectorised ``score_matrix``.

    Same scores; the candidates' columns are looked up once per candidate list and once
    per newly counted item, so per-event evaluation stays fast.
    """

    def __init__(self, half_life_s: float | None = None) -> None:
        super().__init__(half_life_s)
        self._ckey: tuple[int, int, int] | None = None
        self._citems: Sequence[EntityId] = ()
        self._cidx = np.zeros(0, np.int64)

    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> np.ndarray:
        """Return ``(len(users), len(items))`` float64; every user gets the same row."""
        key = (id(items), len(items), len(self._col))
        if key != self._ckey or self._citems is not items:
            get = self._col.get
            self._cidx = np.fromiter((get(k, -1) for k in items), np.int64, len(items))
            self._ckey, self._citems = key, items
        cur = self._current()
        row = np.zeros(len(items), np.float64)
        ok = self._cidx >= 0
        row[ok] = cur[self._cidx[ok]]
        return np.broadcast_to(row, (len(users), len(items)))


class _PairMemory:
    """Last event time of every (user, destination) pair learned so far."""

    def __init__(self) -> None:
        self._last: dict[EntityId, dict[EntityId, float]] = {}
        self.now = -math.inf
        self._cols = _ColumnCache()

    def learn_many(self, batch: EventBatch) -> None:
        """Remember each event's pair with its time; advance ``now`` to the latest time."""
        last = self._last
        for u, i, t in zip(batch.user_ids, batch.item_ids, batch.ts.tolist(), strict=True):
            row = last.get(user_key(u))
            if row is None:
                row = last[user_key(u)] = {}
            ik = item_key(i)
            if t > row.get(ik, -math.inf):
                row[ik] = t
            if t > self.now:
                self.now = t

    def _last_times(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> np.ndarray:
        """Return ``(len(users), len(items))`` float64 last pair times, ``-inf`` if never."""
        col = self._cols.index(items)
        out = np.full((len(users), len(items)), -np.inf)
        for r, u in enumerate(users):
            row = self._last.get(u)
            if not row:
                continue
            for ik, t in row.items():
                j = col.get(ik)
                if j is not None:
                    out[r, j] = t
        return out

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> np.ndarray:
        """Score ``items`` (namespaced) for one user: row 0 of ``score_matrix``."""
        return self.score_matrix([user], items)[0]  # type: ignore[attr-defined]


class EdgeBank(_PairMemory):
    """EdgeBank (Poursafaei et al., NeurIPS 2022 D&B; TGB ``EdgeBankPredictor``).

    Parameters
    ----------
    window_s
        ``None`` for unlimited memory (EdgeBank-inf); otherwise the time window in event
        seconds (EdgeBank-tw): a pair counts only if last seen at or after
        ``now - window_s``, ``now`` being the latest event time learned so far.

    Raises
    ------
    BadRequest
        If ``window_s`` is not ``None`` or a positive number.

    Examples
    --------
    >>> eb = EdgeBank(window_s=10.0)
    >>> eb.learn_many(EventBatch.from_rows([("u", "a", 1.0, 0.0), ("u", "b", 1.0, 15.0)]))
    >>> eb.score_matrix(["u:u"], ["i:a", "i:b", "i:c"]).tolist()
    [[0.0, 1.0, 0.0]]
    """

    def __init__(self, window_s: float | None = None) -> None:
        if window_s is not None and not (isinstance(window_s, int | float) and window_s > 0):
            msg = f"EdgeBank window_s must be positive seconds or None, got {window_s!r}"
            raise BadRequest(msg)
        super().__init__()
        self.window_s = None if window_s is None else float(window_s)

    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> np.ndarray:
        """Return ``(len(users), len(items))`` float64: 1.0 for remembered pairs, else 0.0."""
        last = self._last_times(users, items)
        start = -math.inf if self.window_s is None else self.now - self.window_s
        return (last >= start).astype(np.float64) * np.isfinite(last)


class Recency(_PairMemory):
    """Per-user recency: a destination scores the time the user last engaged with it.

    Destinations the user never engaged with score ``-inf`` and tie at the bottom.

    Examples
    --------
    >>> r = Recency()
    >>> r.learn_many(EventBatch.from_rows([("u", "a", 1.0, 1.0), ("u", "b", 1.0, 2.0)]))
    >>> r.score_matrix(["u:u"], ["i:a", "i:b", "i:c"]).tolist()
    [[1.0, 2.0, -inf]]
    """

    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> np.ndarray:
        """Return ``(len(users), len(items))`` float64 last engagement times (``-inf``: never)."""
        return self._last_times(users, items)


def baseline_scorers(
    stream: LinkPredStream, *, edgebank_window: str = "test_span"
) -> dict[str, Callable[[], Scorer] | Mapping[str, Callable[[], Scorer]]]:
    """Return factories of the baselines for ``stream``, keyed by :data:`BASELINES`.

    Parameters
    ----------
    stream
        The split stream (its test span sets the EdgeBank window).
    edgebank_window
        ``"test_span"`` (default): ``edgebank_tw``'s window is ``stream.test_span_s``;
        ``"tgb"``: 0.15 x ``stream.train_span_s``, as TGB's ``EdgeBankPredictor``.

    Returns
    -------
    dict
        Name -> factory, except ``popularity_recent``: a mapping ``label -> factory``
        of the candidate half-lives, for :func:`evaluate_scorers` to choose from on
        validation.

    Raises
    ------
    BadRequest
        If ``edgebank_window`` is not one of the two names.
    """
    if edgebank_window == "test_span":
        window = stream.test_span_s
    elif edgebank_window == "tgb":
        window = 0.15 * stream.train_span_s
    else:
        msg = f"edgebank_window must be 'test_span' or 'tgb', got {edgebank_window!r}"
        raise BadRequest(msg)
    tw = window if window > 0 else None
    return {
        "edgebank_inf": lambda: EdgeBank(None),
        "edgebank_tw": lambda: EdgeBank(tw),
        "popularity": lambda: _Popularity(None),
        "recency": Recency,
        "popularity_recent": {f"half_life_s={h:g}": (lambda h=h: _Popularity(h))
                              for h in POPULARITY_HALF_LIVES_S},
    }


# ---------------------------------------------------------------------- harness
@dataclass(frozen=True)
class SplitMetrics:
    """Metrics of one scored split.

    Attributes
    ----------
    n, n_repeat, n_new
        Scored events, of which repeat / new.
    mrr, recall, mrr_repeat, mrr_new, recall_repeat, recall_new
        Means of ``1 / rank`` and of ``rank <= k`` over all / repeat / new events (NaN
        over none).
    """

    n: int
    n_repeat: int
    n_new: int
    mrr: float
    recall: float
    mrr_repeat: float
    mrr_new: float
    recall_repeat: float
    recall_new: float

    @classmethod
    def from_ranks(cls, ranks: npt.ArrayLike, repeat: npt.ArrayLike, k: int) -> SplitMetrics:
        """Summarise tie-averaged ranks ``(n,)`` float and a repeat mask ``(n,)`` bool."""
        r = np.asarray(ranks, np.float64)
        rp = np.asarray(repeat, np.bool_)
        rr, hit = 1.0 / np.maximum(r, 1.0), (r <= k).astype(np.float64)

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if len(x) else math.nan

        return cls(len(r), int(rp.sum()), int((~rp).sum()), mean(rr), mean(hit),
                   mean(rr[rp]), mean(rr[~rp]), mean(hit[rp]), mean(hit[~rp]))


def _scores(scorer: Scorer, users: list[EntityId], cands: list[EntityId]) -> np.ndarray:
    fast = getattr(scorer, "score_matrix", None)
    if fast is not None:
        s = np.asarray(fast(users, cands))
    else:
        s = np.stack([np.asarray(scorer.score_items(u, cands)) for u in users])
    if s.shape != (len(users), len(cands)):
        msg = f"scorer returned shape {s.shape}, expected {(len(users), len(cands))}"
        raise BadRequest(msg)
    return s


def evaluate_scorer(
    scorer: Scorer,
    stream: LinkPredStream,
    *,
    batch_size: int = 200,
    k: int = 10,
    per_event: bool = False,
) -> dict[str, SplitMetrics]:
    """Run the protocol (module docstring) for one fresh scorer.

    Parameters
    ----------
    scorer
        Fresh scorer: ``learn_many(EventBatch)`` plus ``score_matrix(users, items)`` (or
        ``score_items``) over namespaced ids.
    stream
        The split stream.
    batch_size
        Events per score-then-learn step (>= 1).
    k
        Recall cut-off (>= 1).
    per_event
        Ignore ``batch_size``: each step is one run of events sharing an event time, so
        every event is scored knowing every strictly earlier event (the information
        DyGLib's neighbour sampler gives DyGFormer/TPNet on the TGB leaderboard; see
        the module docstring).

    Returns
    -------
    dict
        ``{"validation": SplitMetrics, "test": SplitMetrics}``.

    Raises
    ------
    BadRequest
        If ``batch_size`` or ``k`` is not a positive integer.
    """
    _check_int("batch_size", batch_size)
    _check_int("k", k)
    ev = stream.events
    for s in range(0, stream.n_train, TRAIN_CHUNK):
        scorer.learn_many(ev.slice(s, min(s + TRAIN_CHUNK, stream.n_train)))
    cand_keys = [item_key(c) for c in stream.candidates]
    col = {c: j for j, c in enumerate(stream.candidates)}
    out: dict[str, SplitMetrics] = {}
    for name, lo, hi in (("validation", stream.n_train, stream.n_val_end),
                         ("test", stream.n_val_end, len(ev))):
        ranks = np.zeros(hi - lo, np.float64)
        for s, e in _batches(ev.ts, lo, hi, batch_size, per_event):
            b = ev.slice(s, e)
            true_cols = np.fromiter((col[i] for i in b.item_ids), np.int64, len(b))
            scores = _scores(scorer, [user_key(u) for u in b.user_ids], cand_keys)
            ranks[s - lo:s - lo + len(b)] = tie_averaged_ranks(scores, true_cols)
            scorer.learn_many(b)
        out[name] = SplitMetrics.from_ranks(ranks, stream.repeat[lo:hi], k)
    return out


def _batches(ts: np.ndarray, lo: int, hi: int, size: int,
             per_event: bool) -> list[tuple[int, int]]:
    """Return ``[start, stop)`` of each score-then-learn step over ``[lo, hi)``."""
    if not per_event:
        return [(s, min(s + size, hi)) for s in range(lo, hi, size)]
    cuts = (lo + 1 + np.flatnonzero(np.diff(ts[lo:hi]) != 0)).tolist()
    starts = [lo, *cuts]
    return list(zip(starts, [*cuts, hi], strict=True)) if hi > lo else []


def _check_int(name: str, v: object) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        msg = f"{name} must be an integer >= 1, got {v!r}"
        raise BadRequest(msg)


def _shape(results: Mapping[str, SplitMetrics], k: int) -> dict[str, dict[str, float]]:
    rk = f"recall_at_{k}"
    out: dict[str, dict[str, float]] = {
        "mrr": {}, rk: {}, "mrr_repeat": {}, "mrr_new": {}, f"{rk}_repeat": {}, f"{rk}_new": {}}
    for name, m in results.items():
        out["mrr"][name] = m.mrr
        out[rk][name] = m.recall
        out["mrr_repeat"][name] = m.mrr_repeat
        out["mrr_new"][name] = m.mrr_new
        out[f"{rk}_repeat"][name] = m.recall_repeat
        out[f"{rk}_new"][name] = m.recall_new
    return out


Factory = Callable[[], Scorer]


def evaluate_scorers(
    scorers: Mapping[str, Factory | Mapping[str, Factory]],
    stream: LinkPredStream,
    *,
    batch_size: int = 200,
    k: int = 10,
    per_event: bool = False,
    baselines: Iterable[str] = (),
) -> dict[str, Any]:
    """Evaluate several scorers on one stream and shape the result as :func:`run_linkpred`.

    Parameters
    ----------
    scorers
        Name -> factory of a fresh scorer (called once), or name -> ``{label: factory}``
        of variants: each variant is run, the one with the best **validation** MRR is
        reported under ``name`` (first label on ties) and its label under
        ``"selected"``. Test numbers never take part in the choice.
    stream, batch_size, k, per_event
        As :func:`evaluate_scorer`.
    baselines
        Which of the names are baselines (listed under ``"baselines"``; the rest under
        ``"types"``).

    Returns
    -------
    dict
        See :func:`run_linkpred`.

    Raises
    ------
    BadRequest
        If ``batch_size``/``k`` is not a positive integer or a variant mapping is empty.
    """
    _check_int("batch_size", batch_size)
    _check_int("k", k)
    base_set = set(baselines)
    val: dict[str, SplitMetrics] = {}
    test: dict[str, SplitMetrics] = {}
    seconds: dict[str, float] = {}
    selected: dict[str, str] = {}
    for name, make in scorers.items():
        t0 = time.perf_counter()
        variants = make if isinstance(make, Mapping) else {"": make}
        if not variants:
            msg = f"scorer {name!r} has no variants to choose from"
            raise BadRequest(msg)
        best: tuple[str, dict[str, SplitMetrics]] | None = None
        for label, factory in variants.items():
            res = evaluate_scorer(factory(), stream, batch_size=batch_size, k=k,
                                  per_event=per_event)
            if best is None or _gt(res["validation"].mrr, best[1]["validation"].mrr):
                best = (label, res)
        assert best is not None
        if isinstance(make, Mapping):
            selected[name] = best[0]
        seconds[name] = round(time.perf_counter() - t0, 3)
        val[name], test[name] = best[1]["validation"], best[1]["test"]
    any_test = next(iter(test.values()), None)
    any_val = next(iter(val.values()), None)
    q1 = round(100 * stream.n_train / max(len(stream.events), 1))
    q2 = round(100 * stream.n_val_end / max(len(stream.events), 1))
    steps = ("event by event (each timestamp's events scored, then learned)" if per_event
             else f"in batches of {batch_size}")
    return {
        **_shape(test, k),
        "validation": _shape(val, k),
        "n_test": len(stream.events) - stream.n_val_end,
        "n_validation": stream.n_val_end - stream.n_train,
        "dataset": stream.name,
        "types": [n for n in scorers if n not in base_set],
        "baselines": [n for n in scorers if n in base_set],
        "protocol": PROTOCOL.format(q1=q1, q2=q2, steps=steps, nc=len(stream.candidates), k=k),
        "details": {
            "n_train": stream.n_train,
            "n_test_repeat": any_test.n_repeat if any_test else 0,
            "n_validation_repeat": any_val.n_repeat if any_val else 0,
            "n_candidates": len(stream.candidates),
            "selected": selected,
            "split": {"val_time": stream.val_time, "test_time": stream.test_time,
                      "test_span_s": stream.test_span_s,
                      "train_span_s": stream.train_span_s},
            "k": k,
            "batch_size": None if per_event else batch_size,
            "per_event": per_event,
            "seconds": seconds,
        },
    }


def _gt(a: float, b: float) -> bool:
    """Return ``a > b``, NaN counting as the lowest value."""
    if math.isnan(a):
        return False
    return math.isnan(b) or a > b


def run_linkpred(
    dataset: str,
    types: Sequence[TopologySpec] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 200,
    k: int = 10,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    per_event: bool = False,
    edgebank_window: str = "test_span",
) -> dict[str, Any]:
    """Temporal link prediction (TGB protocol) of embedding types and baselines.

    Parameters
    ----------
    dataset
        ``"wikipedia"``, ``"collegemsg"`` or ``"enron"`` (:data:`LINKPRED_DATASETS`).
    types
        Embedding types to evaluate; default every declared type
        (the lowest declared version of each name). Each is trained fresh in-process from its
        ``algorithm`` and ``params``.
    data_dir
        Folder holding the data sets (default: ``streamer.datasets.data_dirs``).
    batch_size
        Events per score-then-learn step (TGB: 200).
    k
        Recall cut-off.
    val_frac, test_frac
        Fractions of events in validation and test (by event-time quantile).
    per_event
        Score each timestamp's events knowing every earlier event (ignores
        ``batch_size``; the information regime of DyGLib-evaluated models, see the
        module docstring). About 10x slower (5 min for Wikipedia instead of 30 s).
    edgebank_window
        ``"test_span"`` or ``"tgb"``, see :func:`baseline_scorers`.

    Returns
    -------
    dict
        JSON-ready. **Test** metrics at the top level, each ``{name: float}`` over the
        type names and :data:`BASELINES`: ``"mrr"``, ``"recall_at_<k>"``,
        ``"mrr_repeat"``, ``"mrr_new"``, ``"recall_at_<k>_repeat"``,
        ``"recall_at_<k>_new"``; ``"validation"``: the same six for the validation split;
        ``"n_test"``, ``"n_validation"``; ``"dataset"``; ``"types"`` and ``"baselines"``
        (name lists); ``"protocol"`` (one-line description); ``"details"``:
        ``"n_train"``, ``"n_test_repeat"``, ``"n_validation_repeat"``,
        ``"n_candidates"``, ``"selected"`` (variant chosen on validation, e.g.
        ``{"popularity_recent": "half_life_s=3600"}``), ``"split"`` (times in event
        seconds), ``"edgebank_tw_window_s"``, ``"k"``, ``"batch_size"`` (``None`` per
        event), ``"per_event"``, ``"seconds"`` (wall time per scorer, informative only).
        Metrics are NaN where a split has no repeat/new events (map them to ``null``
        before printing standard JSON, as ``TaskResult.to_json`` does).

    Raises
    ------
    ConfigError
        Unknown/unsupported data set, missing data file, or a type whose algorithm or
        params are invalid or whose name repeats or is a baseline name.
    BadRequest
        ``batch_size``/``k`` not a positive integer, fractions out of range, unknown
        ``edgebank_window``.
    """
    _check_int("batch_size", batch_size)
    _check_int("k", k)
    if edgebank_window not in ("test_span", "tgb"):
        msg = f"edgebank_window must be 'test_span' or 'tgb', got {edgebank_window!r}"
        raise BadRequest(msg)
    if types is None:
        from streamer.registry import declared_types, first_versions

        types = first_versions(declared_types())
    from streamer.learn.registry import build_learner

    names = [t.name for t in types]
    dup = next((n for n in names if names.count(n) > 1 or n in BASELINES), None)
    if dup is not None:
        msg = f"embedding type name {dup!r} is repeated or clashes with a baseline name"
        raise ConfigError(msg)
    for t in types:  # fail on bad params before reading data
        build_learner(t.algorithm, t.params)
    stream = load_linkpred_stream(dataset, data_dir, val_frac=val_frac, test_frac=test_frac)
    factories: dict[str, Factory | Mapping[str, Factory]] = {
        t.name: (lambda t=t: build_learner(t.algorithm, t.params)) for t in types}
    factories.update(baseline_scorers(stream, edgebank_window=edgebank_window))
    out = evaluate_scorers(factories, stream, batch_size=batch_size, k=k, per_event=per_event,
                           baselines=BASELINES)
    out["details"]["edgebank_tw_window_s"] = (
        stream.test_span_s if edgebank_window == "test_span" else 0.15 * stream.train_span_s)
    return out


def to_task_results(out: Mapping[str, Any]) -> list[TaskResult]:
    """Turn a :func:`run_linkpred` result into one :class:`TaskResult` per embedding type.

    Each has ``task="linkpred"``, the test metrics of the type (``mrr``,
    ``recall_at_<k>``, ``..._repeat``, ``..._new``), the same metrics per baseline in
    ``baselines``, ``n = n_test`` and ``details`` with the type name, the validation
    metrics of the type and of the baselines, the split and the protocol.
    """
    metric_names = [m for m in out if isinstance(out[m], dict) and m not in
                    ("validation", "details")]
    val = out.get("validation", {})

    def pick(src: Mapping[str, Any], name: str) -> dict[str, float]:
        return {m: src[m][name] for m in metric_names if name in src.get(m, {})}

    res = []
    for name in out.get("types", []):
        res.append(TaskResult(
            task="linkpred", dataset=str(out.get("dataset", "")), metrics=pick(out, name),
            baselines={b: pick(out, b) for b in out.get("baselines", [])},
            n=int(out.get("n_test", 0)),
            details={"type": name, "validation": pick(val, name),
                     "validation_baselines": {b: pick(val, b) for b in out.get("baselines", [])},
                     "n_validation": out.get("n_validation"),
                     "protocol": out.get("protocol"), **dict(out.get("details", {}))}))
    return res
