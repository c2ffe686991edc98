"""Predict-then-learn (prequential) link-prediction evaluation (DESIGN §7, CONVENTIONS C14).

For every event in the evaluation range, the learner scores the true item against *all*
candidate items **before** it learns the micro-batch holding that event; then it learns
the batch. This is the TGB temporal link-prediction protocol (Huang et al., "Temporal
Graph Benchmark for Machine Learning on Temporal Graphs", NeurIPS 2023) with one-vs-all
ranking, and river's progressive validation (``river.evaluate.progressive_val_score``).

Ranks give tied candidates the mean of the optimistic and pessimistic rank (as TGB does),
so a constant scorer ranks the true item in the middle, never first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from streamer.errors import BadRequest
from streamer.learn.base import EventBatch
from streamer.types import EntityId, item_key, user_key

__all__ = [
    "Popularity",
    "PrequentialResult",
    "Scorer",
    "prequential",
    "rebatch",
    "tie_averaged_ranks",
]


@runtime_checkable
class Scorer(Protocol):
    """What the harness needs: any :class:`~streamer.learn.base.OnlineLearner` fits."""

    def learn_many(self, batch: EventBatch) -> None:
        """Apply a batch of events."""
        ...

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> npt.NDArray[np.float32]:
        """Score ``items`` for ``user``; shape ``(len(items),)``, higher is better."""
        ...


@dataclass(frozen=True)
class PrequentialResult:
    """Metrics of one prequential run.

    Attributes
    ----------
    n_events
        Events scored. ``recall_at_k``, ``mrr`` are means over them (NaN if none).
    k
        Cut-off of ``recall_at_k``: fraction of events whose tie-averaged rank is ``<= k``.
    n_repeat, recall_repeat, mrr_repeat
        The same over events whose (user, item) pair appeared earlier in the stream.
    n_new, recall_new, mrr_new
        The same over first-time pairs.
    """

    n_events: int
    k: int
    recall_at_k: float
    mrr: float
    n_repeat: int
    recall_repeat: float
    mrr_repeat: float
    n_new: int
    recall_new: float
    mrr_new: float

    def to_dict(self) -> dict[str, float | int]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def tie_averaged_ranks(scores: npt.ArrayLike, true_cols: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the 1-based rank of each row's true column, ties averaged.

    Parameters
    ----------
    scores
        Shape ``(n, m)``, higher is better. NaN counts as the lowest score.
    true_cols
        Shape ``(n,)`` int, column of the true candidate in each row.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)`` float64: ``(optimistic + pessimistic) / 2`` where optimistic =
        ``1 + #(score > true)`` and pessimistic = ``#(score >= true)``.

    Examples
    --------
    >>> tie_averaged_ranks([[0.1, 0.5, 0.5, 0.9]], [1]).tolist()
    [2.5]
    """
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    if s.ndim != 2:
        msg = f"scores must be 2-D (n, m), got shape {s.shape}"
        raise BadRequest(msg)
    cols = np.asarray(true_cols, np.int64)
    t = s[np.arange(len(s)), cols][:, None]
    opt = 1 + (s > t).sum(axis=1)
    pess = (s >= t).sum(axis=1)
    return (opt + pess) / 2.0


def rebatch(batches: Iterable[EventBatch], size: int) -> Iterator[EventBatch]:
    """Re-cut a stream of batches into batches of ``size`` events (the last may be shorter)."""
    buf: list[EventBatch] = []
    held = 0
    for b in batches:
        start = 0
        while start < len(b):
            take = min(size - held, len(b) - start)
            buf.append(b.slice(start, start + take))
            held += take
            start += take
            if held == size:
                yield _concat(buf)
                buf, held = [], 0
    if held:
        yield _concat(buf)


def _concat(parts: list[EventBatch]) -> EventBatch:
    if len(parts) == 1:
        return parts[0]
    return EventBatch(
        [u for p in parts for u in p.user_ids],
        [i for p in parts for i in p.item_ids],
        np.concatenate([p.weights for p in parts]),
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.partitions for p in parts]),
        np.concatenate([p.offsets for p in parts]),
        [a for p in parts for a in p.actions],
    )


def _score(learner: Scorer, users: list[EntityId], cands: list[EntityId]) -> np.ndarray:
    fast = getattr(learner, "score_matrix", None)
    if fast is not None:
        return np.asarray(fast(users, cands))
    return np.stack([np.asarray(learner.score_items(u, cands)) for u in users])


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan


def prequential(
    learner: Scorer,
    stream: Iterable[EventBatch],
    candidates: Sequence[str],
    *,
    eval_from: int,
    batch_size: int = 200,
    k: int = 10,
) -> PrequentialResult:
    """Run predict-then-learn over ``stream`` and score events from position ``eval_from``.

    Parameters
    ----------
    learner
        Any object with ``learn_many`` and ``score_items`` (an ``OnlineLearner``); a
        ``score_matrix(users, items) -> (n_users, n_items)`` method is used when present.
    stream
        Batches of events in stream order (raw ids). Events before ``eval_from`` are
        learned in the given batches (cut at ``eval_from``), never scored.
    candidates
        Raw item ids to rank against, e.g. every distinct item of the data set. Each
        scored event's item must be one of them.
    eval_from
        0-based position of the first scored event (e.g. ``int(0.85 * n)`` for the last
        15%).
    batch_size
        Events per predict-then-learn step in the evaluation range (TGB uses 200).
    k
        Recall cut-off.

    Returns
    -------
    PrequentialResult

    Raises
    ------
    BadRequest
        If ``batch_size``/``k`` < 1, ``eval_from`` < 0, candidates are empty, or a scored
        event's item is not a candidate.
    """
    if batch_size < 1 or k < 1 or eval_from < 0:
        msg = (f"batch_size and k must be >= 1 and eval_from >= 0, got batch_size={batch_size}, "
               f"k={k}, eval_from={eval_from}")
        raise BadRequest(msg)
    cand_keys = [item_key(c) for c in candidates]
    col = {c: j for j, c in enumerate(candidates)}
    if not col:
        msg = "prequential needs at least one candidate item, got none"
        raise BadRequest(msg)
    seen: set[tuple[str, str]] = set()
    ranks: list[np.ndarray] = []
    repeats: list[np.ndarray] = []
    pos = 0

    def warm(b: EventBatch) -> None:
        seen.update(zip(b.user_ids, b.item_ids, strict=True))
        learner.learn_many(b)

    def tail() -> Iterator[EventBatch]:
        nonlocal pos
        for b in stream:
            n = len(b)
            if pos + n <= eval_from:
                warm(b)
            elif pos >= eval_from:
                yield b
            else:
                cut = eval_from - pos
                warm(b.slice(0, cut))
                yield b.slice(cut, n)
            pos += n

    for b in rebatch(tail(), batch_size):
        try:
            true_cols = np.fromiter((col[i] for i in b.item_ids), np.int64, len(b))
        except KeyError as exc:
            msg = f"scored event's item {exc.args[0]!r} is not among the {len(col)} candidates"
            raise BadRequest(msg) from exc
        scores = _score(learner, [user_key(u) for u in b.user_ids], cand_keys)
        ranks.append(tie_averaged_ranks(scores, true_cols))
        rep = np.zeros(len(b), np.bool_)
        for j, pair in enumerate(zip(b.user_ids, b.item_ids, strict=True)):
            rep[j] = pair in seen
            seen.add(pair)
        repeats.append(rep)
        learner.learn_many(b)
    r = np.concatenate(ranks) if ranks else np.zeros(0)
    rp = np.concatenate(repeats) if repeats else np.zeros(0, np.bool_)
    hit, rr = (r <= k).astype(np.float64), 1.0 / np.maximum(r, 1.0)
    return PrequentialResult(
        n_events=len(r), k=k, recall_at_k=_mean(hit), mrr=_mean(rr),
        n_repeat=int(rp.sum()), recall_repeat=_mean(hit[rp]), mrr_repeat=_mean(rr[rp]),
        n_new=int((~rp).sum()), recall_new=_mean(hit[~rp]), mrr_new=_mean(rr[~rp]),
    )


class Popularity:
    """Popularity baseline: score = (decayed) count of the item's events so far.

    Parameters
    ----------
    half_life_s
        Half-life of the counts in event seconds; ``None`` for plain counts.

    Notes
    -----
    Counts are stored lazily as ``(value, last_ts)`` per item and decayed to the latest
    event time when scoring, so the ranking is the same as decaying everything at once.
    The user is ignored.

    Examples
    --------
    >>> p = Popularity()
    >>> p.learn_many(EventBatch.from_rows([("u", "a", 1.0, 0.0), ("v", "a", 1.0, 1.0),
    ...                                    ("u", "b", 1.0, 2.0)]))
    >>> p.score_items("u:x", ["i:a", "i:b", "i:c"]).tolist()
    [2.0, 1.0, 0.0]
    """

    def __init__(self, half_life_s: float | None = None) -> None:
        if half_life_s is not None and not half_life_s > 0:
            msg = f"Popularity half_life_s must be > 0 or None, got {half_life_s!r}"
            raise BadRequest(msg)
        self.half_life_s = half_life_s
        self._col: dict[str, int] = {}
        self._val = np.zeros(0, np.float64)
        self._ts = np.zeros(0, np.float64)

    def learn_many(self, batch: EventBatch) -> None:
        """Count the batch's events (weights times decay)."""
        for raw, w, t in zip(batch.item_ids, batch.weights.tolist(), batch.ts.tolist(),
                             strict=True):
            i = item_key(raw)
            j = self._col.get(i)
            if j is None:
                j = self._col[i] = len(self._col)
                if j >= len(self._val):
                    self._val = np.concatenate([self._val, np.zeros(max(16, j), np.float64)])
                    self._ts = np.concatenate([self._ts, np.full(max(16, j), t)])
                self._ts[j] = t
            if self.half_life_s is None:
                self._val[j] += w
            elif t >= self._ts[j]:
                self._val[j] = self._val[j] * 0.5 ** ((t - self._ts[j]) / self.half_life_s) + w
                self._ts[j] = t
            else:
                self._val[j] += w * 0.5 ** ((self._ts[j] - t) / self.half_life_s)

    def _current(self) -> np.ndarray:
        n = len(self._col)
        v = self._val[:n]
        if self.half_life_s is None or n == 0:
            return v
        ts = self._ts[:n]
        return v * 0.5 ** ((ts.max() - ts) / self.half_life_s)

    def score_matrix(self, users: Sequence[EntityId], items: Sequence[EntityId]) -> np.ndarray:
        """Return ``(len(users), len(items))`` float64 scores; every user gets the same row."""
        cur = self._current()
        row = np.zeros(len(items), np.float64)
        for c, key in enumerate(items):
            j = self._col.get(key)
            if j is not None:
                row[c] = cur[j]
        return np.broadcast_to(row, (len(users), len(items)))

    def score_items(self, user: EntityId, items: Sequence[EntityId]) -> np.ndarray:
        """Return the popularity of ``items`` (namespaced ids), shape ``(len(items),)``."""
        return self.score_matrix([user], items)[0]
