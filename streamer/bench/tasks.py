"""Static benchmark tasks (DESIGN §7): topic, metadata, follow-Jaccard and stability.

Each task is a pure function of an :class:`~streamer.bench.embeddings.Embeddings` (plus
labels or a graph) returning a :class:`~streamer.bench.results.TaskResult`. They are fast
enough (a few seconds for 28k users x 128 dims on one core) to run inside a worker on
every snapshot through :func:`evaluate`. The offline runner that streams a data set
through every declared type first is :func:`streamer.bench.runner.run_task`.

=================  ======================================  =============================
task               data sets                               metrics (baselines)
=================  ======================================  =============================
``topic``          ``lastfm-tags``, ``lastfm-plays``        accuracy, macro_f1
                                                           (``majority``, ``random``)
``metadata``       ``lastfm-asia`` (country),               accuracy, macro_f1
                   ``deezer`` (gender)                     (``majority``, ``random``)
``follow-jaccard`` ``lastfm-tags``, ``lastfm-plays``        spearman (``random``)
                   (HetRec friends), ``lastfm-asia``,
                   ``deezer`` (the follow graph)
``stability``      any (two snapshots of one type)         jaccard_at_10,
                                                           procrustes_distance, n_common
=================  ======================================  =============================

Decisions
---------
* **Classifier** (topic, metadata): each user vector is L2-normalised (the index and the
  neighbour API compare by cosine, so only the direction is meaningful; SGNS user vectors
  are decayed means whose norm tracks activity, cooc vectors are unit already), then
  standardised per dimension with the mean and scale of the *training fold*
  (``sklearn.pipeline`` of ``Normalizer``, ``StandardScaler``, ``LogisticRegression``:
  lbfgs, multinomial, ``C=0.1``, ``max_iter=1000``). ``C=0.1`` was chosen once over
  ``{1, 0.1, 0.01}`` on the four data sets as the best compromise between accuracy and
  macro-F1: ``C=1`` overfits the ~1,100-user topic training folds (20 classes x 128
  dims) and ``C=0.01`` collapses towards the majority class; the same ``C`` is used for
  the ``random`` baseline. Stratified ``folds``-fold CV with
  ``shuffle=True, random_state=seed`` over users sorted by raw id; metrics are the mean
  over folds; ``macro_f1`` averages F1 over every class of the evaluated users (a class
  never predicted counts 0). Classes with fewer than ``folds`` users are dropped
  (reported in ``details``). ``majority`` predicts the most frequent class of the
  training fold (ties: the smallest label); ``random`` replaces every user's vector by a
  seeded standard-normal vector of the same dimension and runs the same pipeline on the
  same folds.
* **Topic label**: the 20 most used tags of ``user_taggedartists.dat`` (rows before 2005
  dropped) by number of tag assignments, ties broken by the smaller integer tag id; a
  user's label is the one of those 20 tags they assigned most often, ties broken by the
  tag's global rank (the more used tag overall wins). Users who never used one of the
  20 tags have no label.
* **Follow-Jaccard**: see :func:`follow_jaccard` for the pair sampling and why the
  Jaccard index is computed on the full graph.
* **Stability**: see :func:`stability` (exact cosine kNN, Procrustes on L2-normalised rows).
* **Threads**: every task runs with the BLAS/OpenMP pools limited to one thread
  (``threadpoolctl``): on a shared, loaded host the default pools oversubscribe the cores
  and made one logistic-regression fit ~70x slower (7 s instead of 0.1 s).
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.linalg import orthogonal_procrustes
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits

from streamer.bench.embeddings import Embeddings
from streamer.bench.graphs import FriendGraph
from streamer.bench.results import TaskResult
from streamer.datasets import (
    data_dirs,
    dataset_names,
    friends_datasets,
    load_friends,
    load_labels,
    load_user_tags,
)
from streamer.errors import BadRequest, ConfigError
from streamer.types import user_key

__all__ = [
    "N_TOP_TAGS",
    "TASKS",
    "TaskNeeds",
    "classify_users",
    "evaluate",
    "follow_jaccard",
    "load_graph",
    "load_task_labels",
    "metadata",
    "run_task",
    "stability",
    "task_needs",
    "topic",
    "topic_labels",
]

TASKS: Final = ("topic", "metadata", "follow-jaccard", "stability")
"""Tasks of this module (``linkpred`` lives in :mod:`streamer.bench.linkpred`)."""

N_TOP_TAGS: Final = 20
"""How many of the most used HetRec tags are topic classes."""

C_REG: Final = 0.1
"""Inverse L2 regularisation strength of the logistic regression (see module docstring)."""

_ACCEPTS: Final[dict[str, tuple[str, ...]]] = {
    "topic": ("lastfm-tags", "lastfm-plays"),
    "metadata": ("lastfm-asia", "deezer"),
    "follow-jaccard": friends_datasets(),
    "stability": dataset_names(),
}
_LABEL_NAMES: Final = {"lastfm-asia": "country (18 classes)", "deezer": "gender (2 classes)"}


# ---------------------------------------------------------------------- task matrix
@dataclass(frozen=True)
class TaskNeeds:
    """What a (task, data set) pair needs besides the embeddings.

    Attributes
    ----------
    task, dataset
        The pair.
    labels
        Per-user label the task predicts (``"top-20 tag"``, ``"country (18 classes)"``,
        ``"gender (2 classes)"``) or ``None``.
    graph
        Friend graph the task reads (``"user_friends.dat"``, ``"follow graph"``) or ``None``.
    holdout
        Whether the offline runner keeps a seeded 20% of the graph's edges out of the
        stream (follow-Jaccard on a follow-graph stream).
    """

    task: str
    dataset: str
    labels: str | None
    graph: str | None
    holdout: bool


def task_needs(task: str, dataset: str) -> TaskNeeds:
    """Return what ``task`` on ``dataset`` needs; reject combinations that make no sense.

    Raises
    ------
    ConfigError
        If the task is unknown or does not apply to the data set (the one-line message
        lists what is accepted).

    Examples
    --------
    >>> task_needs("metadata", "deezer").labels
    'gender (2 classes)'
    >>> task_needs("follow-jaccard", "lastfm-asia").holdout
    True
    """
    if task not in _ACCEPTS:
        msg = (f"unknown task {task!r}; expected one of: {', '.join(TASKS)} "
               "(linkpred is streamer.bench.linkpred)")
        raise ConfigError(msg)
    if dataset not in _ACCEPTS[task]:
        msg = (f"task {task!r} does not apply to data set {dataset!r}; "
               f"{task} accepts: {', '.join(_ACCEPTS[task])}")
        raise ConfigError(msg)
    follow = dataset in ("lastfm-asia", "deezer")
    labels = graph = None
    if task == "topic":
        labels = f"top-{N_TOP_TAGS} tag"
    elif task == "metadata":
        labels = _LABEL_NAMES[dataset]
    elif task == "follow-jaccard":
        graph = "follow graph" if follow else "user_friends.dat"
    return TaskNeeds(task, dataset, labels, graph, task == "follow-jaccard" and follow)


# ---------------------------------------------------------------------- labels
def topic_labels(rows: Iterable[tuple[str, str, str]],
                 n_top: int = N_TOP_TAGS) -> tuple[dict[str, str], tuple[str, ...]]:
    """Derive each user's topic: their most used tag among the ``n_top`` most used tags.

    Parameters
    ----------
    rows
        Tag assignments ``(user_id, artist_id, tag_id)`` (tag ids are integers as text),
        already filtered of bad rows (:func:`streamer.datasets.load_user_tags`).
    n_top
        How many of the most used tags are classes (>= 1).

    Returns
    -------
    labels, top_tags
        ``{user_id: tag_id}`` for users who used at least one top tag, and the top tags
        in rank order. Ranking: number of assignments, descending, then integer tag id,
        ascending. A user's label: most assignments among the top tags, ties broken by
        the better global rank.

    Raises
    ------
    BadRequest
        If ``n_top < 1`` or a tag id is not an integer.

    Examples
    --------
    >>> rows = [("u1", "a", "7"), ("u1", "b", "9"), ("u2", "a", "9"), ("u3", "c", "5")]
    >>> topic_labels(rows, n_top=2)
    ({'u1': '9', 'u2': '9', 'u3': '5'}, ('9', '5'))
    """
    if not isinstance(n_top, int) or n_top < 1:
        msg = f"n_top must be an integer >= 1, got {n_top!r}"
        raise BadRequest(msg)
    rows = list(rows)
    counts = Counter(tag for _u, _a, tag in rows)
    try:
        ranked = sorted(counts, key=lambda t: (-counts[t], int(t)))
    except ValueError:
        bad = next(t for t in counts if not t.strip().lstrip("-").isdigit())
        msg = f"tag id {bad!r} is not an integer"
        raise BadRequest(msg) from None
    top = tuple(ranked[:n_top])
    rank = {t: r for r, t in enumerate(top)}
    per_user: dict[str, Counter[str]] = {}
    for user, _artist, tag in rows:
        if tag in rank:
            per_user.setdefault(user, Counter())[tag] += 1
    labels = {u: min(c, key=lambda t: (-c[t], rank[t])) for u, c in per_user.items()}
    return labels, top


def _dir_key(data_dir: str | os.PathLike[str] | None) -> tuple[str, ...]:
    return tuple(str(p) for p in data_dirs(data_dir))


@functools.lru_cache(maxsize=8)
def _labels_cached(task: str, dataset: str, key: tuple[str, ...]) -> tuple[tuple[str, ...],
                                                                            tuple[Hashable, ...]]:
    data_dir = key[0] if len(key) == 1 else None
    if task == "topic":
        labels: Mapping[str, Hashable] = topic_labels(load_user_tags(data_dir))[0]
    else:
        labels = load_labels(dataset, data_dir)
    users = tuple(sorted(labels))
    return users, tuple(labels[u] for u in users)


def load_task_labels(task: str, dataset: str,
                     data_dir: str | os.PathLike[str] | None = None) -> dict[str, Hashable]:
    """Return ``{raw user_id: label}`` for ``topic`` or ``metadata`` on ``dataset`` (cached).

    Raises
    ------
    ConfigError
        If the pair makes no sense (see :func:`task_needs`) or the files are missing.
    """
    needs = task_needs(task, dataset)
    if needs.labels is None:
        msg = f"task {task!r} has no labels; labelled tasks: topic, metadata"
        raise ConfigError(msg)
    users, labels = _labels_cached(task, dataset, _dir_key(data_dir))
    return dict(zip(users, labels, strict=True))


@functools.lru_cache(maxsize=8)
def _graph_cached(dataset: str, key: tuple[str, ...]) -> FriendGraph:
    data_dir = key[0] if len(key) == 1 else None
    return FriendGraph.from_pairs(load_friends(dataset, data_dir))


def load_graph(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> FriendGraph:
    """Return the full friend/follow graph of ``dataset`` (cached, immutable).

    Raises
    ------
    ConfigError
        If the data set has no friend graph or its file is missing.
    """
    task_needs("follow-jaccard", dataset)
    return _graph_cached(dataset, _dir_key(data_dir))


# ---------------------------------------------------------------------- classification
_F = TypeVar("_F", bound=Callable[..., Any])


def _single_threaded(fn: _F) -> _F:
    """Run ``fn`` with the BLAS/OpenMP thread pools limited to one thread."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _pipeline(seed: int) -> Any:
    return make_pipeline(Normalizer(norm="l2"), StandardScaler(),
                         LogisticRegression(C=C_REG, max_iter=1000, random_state=seed))


def _cv(x: npt.NDArray[np.float32], y: npt.NDArray[Any], splits: list[tuple[Any, Any]],
        classes: npt.NDArray[Any], seed: int) -> tuple[list[float], list[float], list[float]]:
    """Fold accuracy, macro-F1 and (two classes only, else empty) ROC AUC."""
    acc, f1, auc = [], [], []
    for train, test in splits:
        model = _pipeline(seed).fit(x[train], y[train])
        pred = model.predict(x[test])
        acc.append(float(accuracy_score(y[test], pred)))
        f1.append(float(f1_score(y[test], pred, labels=classes, average="macro",
                                 zero_division=0)))
        if len(classes) == 2:
            auc.append(float(roc_auc_score(y[test] == model.classes_[1],
                                           model.decision_function(x[test]))))
    return acc, f1, auc


def _majority(y: npt.NDArray[Any], splits: list[tuple[Any, Any]],
              classes: npt.NDArray[Any]) -> tuple[list[float], list[float]]:
    acc, f1 = [], []
    for train, test in splits:
        vals, counts = np.unique(y[train], return_counts=True)
        pred = np.full(len(test), vals[int(np.argmax(counts))], dtype=y.dtype)
        acc.append(float(accuracy_score(y[test], pred)))
        f1.append(float(f1_score(y[test], pred, labels=classes, average="macro",
                                 zero_division=0)))
    return acc, f1


def _nan_result(task: str, dataset: str, metrics: tuple[str, ...], baselines: tuple[str, ...],
                details: dict[str, Any]) -> TaskResult:
    nan = dict.fromkeys(metrics, math.nan)
    return TaskResult(task, dataset, dict(nan), {b: dict(nan) for b in baselines}, 0, details)


@_single_threaded
def classify_users(
    emb: Embeddings,
    labels: Mapping[str, Hashable],
    *,
    task: str = "classify",
    dataset: str = "",
    folds: int = 5,
    seed: int = 0,
    baselines: bool = True,
) -> TaskResult:
    """Cross-validated logistic regression from user vectors to a per-user label.

    Parameters
    ----------
    emb
        Embeddings; the vector of raw user ``x`` is the row of ``u:x``.
    labels
        ``{raw user_id: label}`` (any hashable, sortable labels).
    task, dataset
        Names recorded in the result.
    folds
        Stratified CV folds (>= 2).
    seed
        Seeds the fold shuffle, the logistic regression and the random baseline vectors.
    baselines
        Also compute the ``majority`` and ``random`` baselines.

    Returns
    -------
    TaskResult
        ``metrics`` ``accuracy``, ``macro_f1`` (fold means); ``baselines`` ``majority``
        and ``random``; ``n`` users evaluated; ``details``: ``n_labelled``,
        ``n_missing`` (labelled users without a vector, not evaluated), ``classes``
        (label -> count), ``roc_auc`` (two classes only: fold mean of the decision
        function's ROC AUC), ``dropped_classes``, per-fold scores, ``seconds``. When
        fewer than two classes with ``folds`` users have vectors the metrics are NaN and
        ``details["skipped"]`` says why.

    Raises
    ------
    BadRequest
        If ``folds < 2`` or ``labels`` is empty.

    Notes
    -----
    Protocol and normalisation: see the module docstring. Logistic regression and
    stratified k-fold are scikit-learn's (``LogisticRegression``, ``StratifiedKFold``).
    """
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        msg = f"folds must be an integer >= 2, got {folds!r}"
        raise BadRequest(msg)
    if not labels:
        msg = f"{task}: no labelled users; expected a non-empty {{user_id: label}} mapping"
        raise BadRequest(msg)
    t0 = time.perf_counter()
    users = sorted(labels)
    vecs, found = emb.lookup([user_key(u) for u in users])
    y_all = np.array([labels[u] for u in users])
    x, y = vecs[found], y_all[found]
    details: dict[str, Any] = {"n_labelled": len(users), "n_missing": int((~found).sum()),
                               "folds": folds, "dim": emb.dim,
                               "features": "L2-normalise, standardise (train fold)",
                               "classifier": f"LogisticRegression(C={C_REG}, lbfgs)"}
    vals, counts = np.unique(y, return_counts=True)
    rare = vals[counts < folds]
    details["dropped_classes"] = {str(v): int(c) for v, c in zip(vals, counts, strict=True)
                                  if c < folds}
    if len(rare):
        keep = ~np.isin(y, rare)
        x, y = x[keep], y[keep]
    classes = np.unique(y)
    details["classes"] = {str(v): int(c) for v, c in zip(*np.unique(y, return_counts=True),
                                                         strict=True)}
    names = ("majority", "random") if baselines else ()
    if len(classes) < 2:
        details["skipped"] = (f"{len(classes)} class(es) with >= {folds} users that have "
                              "vectors; need 2")
        return _nan_result(task, dataset, ("accuracy", "macro_f1"), names, details)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        acc, f1, auc = _cv(x, y, splits, classes, seed)
        out: dict[str, dict[str, float]] = {}
        if baselines:
            m_acc, m_f1 = _majority(y, splits, classes)
            rnd = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
            r_acc, r_f1, _r_auc = _cv(rnd, y, splits, classes, seed)
            out = {"majority": {"accuracy": float(np.mean(m_acc)),
                                "macro_f1": float(np.mean(m_f1))},
                   "random": {"accuracy": float(np.mean(r_acc)),
                              "macro_f1": float(np.mean(r_f1))}}
    details["fold_accuracy"] = acc
    details["fold_macro_f1"] = f1
    if auc:
        details["roc_auc"] = float(np.mean(auc))
    details["seconds"] = round(time.perf_counter() - t0, 3)
    return TaskResult(task, dataset, {"accuracy": float(np.mean(acc)),
                                      "macro_f1": float(np.mean(f1))}, out, int(len(y)), details)


def topic(emb: Embeddings, dataset: str = "lastfm-tags", *, folds: int = 5, seed: int = 0,
          data_dir: str | os.PathLike[str] | None = None, baselines: bool = True) -> TaskResult:
    """User topic prediction on Last.fm HetRec (label: the user's top-20 tag).

    Parameters
    ----------
    emb
        Embeddings trained on the ``lastfm-tags`` or ``lastfm-plays`` stream (users
        ``u:<userID>``); tags never enter either stream.
    dataset
        ``"lastfm-tags"`` or ``"lastfm-plays"`` (both share the same users and labels).
    folds, seed, baselines
        As :func:`classify_users`.
    data_dir
        Data folder (default :func:`streamer.datasets.data_dirs`).

    Returns
    -------
    TaskResult
        See :func:`classify_users`; ``task="topic"``.

    Raises
    ------
    ConfigError
        If the data set is not a Last.fm HetRec stream or its files are missing.
    BadRequest
        As :func:`classify_users`.
    """
    labels = load_task_labels("topic", dataset, data_dir)
    return classify_users(emb, labels, task="topic", dataset=dataset, folds=folds, seed=seed,
                          baselines=baselines)


def metadata(emb: Embeddings, dataset: str = "lastfm-asia", *, folds: int = 5, seed: int = 0,
             data_dir: str | os.PathLike[str] | None = None,
             baselines: bool = True) -> TaskResult:
    """User metadata prediction: LastFM Asia country or Deezer gender.

    Parameters
    ----------
    emb
        Embeddings trained on the ``lastfm-asia`` or ``deezer`` follow-graph stream.
    dataset
        ``"lastfm-asia"`` (country, 18 classes) or ``"deezer"`` (gender, 2 classes).
    folds, seed, baselines
        As :func:`classify_users`.
    data_dir
        Data folder (default :func:`streamer.datasets.data_dirs`).

    Returns
    -------
    TaskResult
        See :func:`classify_users`; ``task="metadata"``.

    Raises
    ------
    ConfigError
        If the data set has no user metadata or its files are missing.
    BadRequest
        As :func:`classify_users`.
    """
    labels = load_task_labels("metadata", dataset, data_dir)
    return classify_users(emb, labels, task="metadata", dataset=dataset, folds=folds, seed=seed,
                          baselines=baselines)


# ---------------------------------------------------------------------- follow-Jaccard
def _unit_rows(m: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


def _pair_cosine(vecs: npt.NDArray[np.float32], a: npt.NDArray[np.int64],
                 b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    u = _unit_rows(vecs)
    return np.einsum("ij,ij->i", u[a], u[b]).astype(np.float64)


def _spearman(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def _sample_non_friends(graph: FriendGraph, eligible: npt.NDArray[np.int64], n: int,
                        rng: np.random.Generator) -> tuple[npt.NDArray[np.int64],
                                                           npt.NDArray[np.int64]]:
    """Sample ``n`` distinct unordered pairs of eligible nodes that are not edges."""
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for _ in range(100):
        if len(out) >= n:
            break
        draw = max(2 * (n - len(out)), 16)
        a = eligible[rng.integers(0, len(eligible), draw)]
        b = eligible[rng.integers(0, len(eligible), draw)]
        ok = (a != b) & ~graph.has_edge(a, b)
        for i, j in zip(a[ok].tolist(), b[ok].tolist(), strict=True):
            key = (i, j) if i < j else (j, i)
            if key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == n:
                    break
    arr = np.array(out, np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


@_single_threaded
def follow_jaccard(
    emb: Embeddings,
    friends: FriendGraph,
    *,
    held_out: npt.NDArray[np.int64] | None = None,
    n_pairs: int = 10_000,
    seed: int = 0,
    dataset: str = "",
    baselines: bool = True,
) -> TaskResult:
    """Spearman correlation of users' cosine similarity with their friend-set Jaccard index.

    Parameters
    ----------
    emb
        Embeddings; raw user ``x`` is ``u:x``.
    friends
        The **full** friend graph (HetRec ``user_friends.dat``, or the whole follow graph).
    held_out
        Shape ``(k, 2)`` node indices of ``friends``: the edges the embeddings did *not*
        see (the offline runner's seeded 20%); friend pairs are drawn from them. ``None``:
        from every edge of ``friends`` (right when the graph is not part of the stream,
        as for HetRec friends; in-sample when it is, e.g. a worker's follow-graph stream).
    n_pairs
        Total pairs wanted (>= 2): ``n_pairs // 2`` friend pairs (all of them if fewer),
        uniformly without replacement among the candidates whose two users have vectors,
        and as many non-friend pairs (1:1).
    seed
        Seeds the pair sampling and the random baseline vectors.
    dataset
        Name recorded in the result.
    baselines
        Also compute the ``random`` baseline (seeded standard-normal vectors of the same
        dimension per graph node, on the same pairs).

    Returns
    -------
    TaskResult
        ``metrics["spearman"]`` (scipy ``spearmanr``, ties averaged) over friend and
        non-friend pairs together; ``baselines["random"]["spearman"]``; ``n`` pairs.
        ``details``: ``n_friend_pairs``, ``n_non_friend_pairs``, ``n_missing`` (candidate
        friend pairs dropped because a user has no vector), ``auc`` (cosine separating
        friends from non-friends, sklearn ``roc_auc_score``), ``spearman_within_friends``,
        ``mean_jaccard_friends``, and with ``held_out`` also ``spearman_train_graph``
        (Jaccard on the graph minus ``held_out``). NaN metrics and
        ``details["skipped"]`` when fewer than 2 friend pairs have vectors.

    Raises
    ------
    BadRequest
        If ``n_pairs < 2`` or ``held_out`` is not ``(k, 2)`` edges of ``friends``.

    Notes
    -----
    Non-friend pairs are distinct unordered pairs of distinct graph nodes that both have
    vectors and are *not* adjacent in the full graph, drawn uniformly with the same RNG.

    The Jaccard index ``|N(a) ∩ N(b)| / |N(a) ∪ N(b)|`` (open neighbourhoods) is computed
    on the **full** graph. The embeddings were trained without the held-out edges, so
    nothing the target uses leaks into the model's input; the target is the true friend
    sets, which is what the task asks about. Computing it on the training graph instead
    would make the target a function of exactly what the model saw (and drop every
    held-out edge from both sets); that variant is reported as
    ``details["spearman_train_graph"]``. Friend pairs must come from edges the model did
    not see: a seen edge ``(a, b)`` puts ``b`` in ``a``'s own input, which inflates the
    cosine of exactly the friend pairs.
    """
    if not isinstance(n_pairs, int) or isinstance(n_pairs, bool) or n_pairs < 2:
        msg = f"n_pairs must be an integer >= 2, got {n_pairs!r}"
        raise BadRequest(msg)
    t0 = time.perf_counter()
    if held_out is None:
        cand = friends.edges
    else:
        cand = np.asarray(held_out, np.int64)
        if cand.ndim != 2 or cand.shape[1] != 2 or (
                len(cand) and not friends.has_edge(cand[:, 0], cand[:, 1]).all()):
            msg = "held_out must be shape (k, 2) node indices of edges of the friend graph"
            raise BadRequest(msg)
    vecs, found = emb.lookup([user_key(u) for u in friends.nodes])
    ok = found[cand[:, 0]] & found[cand[:, 1]] if len(cand) else np.zeros(0, np.bool_)
    details: dict[str, Any] = {"n_candidates": int(len(cand)), "n_missing": int((~ok).sum()),
                               "protocol": "held-out edges" if held_out is not None
                               else "all edges", "jaccard_graph": "full", "dim": emb.dim}
    cand = cand[ok]
    names = ("random",) if baselines else ()
    if len(cand) < 2:
        details["skipped"] = f"{len(cand)} friend pairs with vectors; need 2"
        return _nan_result("follow-jaccard", dataset, ("spearman",), names, details)
    rng = np.random.default_rng(seed)
    n_f = min(n_pairs // 2, len(cand))
    fp = cand[np.sort(rng.choice(len(cand), size=n_f, replace=False))]
    na, nb = _sample_non_friends(friends, np.flatnonzero(found), n_f, rng)
    a = np.r_[fp[:, 0], na]
    b = np.r_[fp[:, 1], nb]
    is_friend = np.r_[np.ones(n_f, np.bool_), np.zeros(len(na), np.bool_)]
    jac = friends.jaccard(a, b)
    cos = _pair_cosine(vecs, a, b)
    rho = _spearman(cos, jac)
    details.update({
        "n_friend_pairs": int(n_f), "n_non_friend_pairs": int(len(na)),
        "auc": float(roc_auc_score(is_friend, cos)) if len(na) else math.nan,
        "spearman_within_friends": _spearman(cos[is_friend], jac[is_friend]),
        "mean_jaccard_friends": float(jac[is_friend].mean()),
        "mean_jaccard_non_friends": float(jac[~is_friend].mean()) if len(na) else math.nan,
    })
    if held_out is not None:
        details["spearman_train_graph"] = _spearman(
            cos, friends.without(np.asarray(held_out, np.int64)).jaccard(a, b))
    out: dict[str, dict[str, float]] = {}
    if baselines:
        rnd = np.random.default_rng(seed).standard_normal((len(friends), emb.dim))
        out["random"] = {"spearman": _spearman(_pair_cosine(rnd.astype(np.float32), a, b), jac)}
    details["seconds"] = round(time.perf_counter() - t0, 3)
    return TaskResult("follow-jaccard", dataset, {"spearman": rho}, out, int(len(a)), details)


# ---------------------------------------------------------------------- stability
def _knn_sets(u: npt.NDArray[np.float32], queries: npt.NDArray[np.int64], k: int,
              chunk: int = 256) -> npt.NDArray[np.int64]:
    """Return the ``k`` nearest rows (cosine, self excluded) of each query, shape (q, k)."""
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk]
        sims = u[q] @ u.T
        sims[np.arange(len(q)), q] = -np.inf
        out[s:s + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


@_single_threaded
def stability(prev: Embeddings, cur: Embeddings, *, k: int = 10, sample: int = 1000,
              seed: int = 0, kind: str | None = None) -> TaskResult:
    """Neighbour-set Jaccard@k and Procrustes-aligned distance between two snapshots.

    Parameters
    ----------
    prev, cur
        Consecutive snapshots of one type (same dimension).
    k
        Neighbours per query (>= 1); clamped to ``n_common - 1``.
    sample
        Query ids drawn uniformly without replacement from the common ids (>= 1;
        all of them if fewer).
    seed
        Seeds the query sample.
    kind
        ``"u:"`` or ``"i:"`` to compare users or items only; ``None``: every id.

    Returns
    -------
    TaskResult
        ``task="stability"``, ``dataset=""``, no baselines, ``n`` = queries. Metrics:

        * ``jaccard_at_10`` (named for the default ``k``; ``details["k"]`` has the one
          used): mean over queries of ``|A ∩ B| / |A ∪ B|``, where ``A``/``B`` are the
          query's ``k`` nearest neighbours by exact cosine among the *common* ids (query
          excluded) in ``prev``/``cur``.
        * ``procrustes_distance``: rows of both snapshots restricted to the common ids
          (sorted) are L2-normalised (``P``, ``C``); ``R`` is the orthogonal matrix
          minimising ``||P R - C||_F`` (``scipy.linalg.orthogonal_procrustes``;
          Schönemann 1966); the metric is the mean over common ids of the Euclidean
          distance ``||P_i R - C_i||_2``, in [0, 2] (0: same up to rotation). ``R``
          minimises the *squared* distances, so this mean of distances can exceed the
          unrotated one by a little when a few rows moved far (the root-mean-square never
          does).
        * ``n_common``: ids present in both.

        ``details["raw_distance"]`` is the same mean without the rotation. With fewer
        than 2 common ids the metrics are NaN (``n_common`` still reported).

    Raises
    ------
    BadRequest
        If the dimensions differ, ``k < 1``, ``sample < 1`` or ``kind`` is invalid.
    """
    if prev.dim != cur.dim:
        msg = f"stability needs snapshots of one dimension, got {prev.dim} and {cur.dim}"
        raise BadRequest(msg)
    for name, v in (("k", k), ("sample", sample)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            msg = f"{name} must be an integer >= 1, got {v!r}"
            raise BadRequest(msg)
    if kind not in (None, "u:", "i:"):
        msg = f"kind must be None, 'u:' or 'i:', got {kind!r}"
        raise BadRequest(msg)
    t0 = time.perf_counter()
    if kind is not None:
        prev, cur = prev.kind(kind), cur.kind(kind)
    common = sorted(set(prev.ids) & set(cur.ids))
    n = len(common)
    details: dict[str, Any] = {"k": min(k, max(n - 1, 0)), "kind": kind or "all",
                               "n_prev": len(prev), "n_cur": len(cur)}
    if n < 2:
        details["skipped"] = f"{n} common ids; need 2"
        return TaskResult("stability", "", {"jaccard_at_10": math.nan,
                                            "procrustes_distance": math.nan,
                                            "n_common": float(n)}, {}, 0, details)
    p = _unit_rows(prev.lookup(common)[0])
    c = _unit_rows(cur.lookup(common)[0])
    kk = min(k, n - 1)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    a_sets, b_sets = _knn_sets(p, q, kk), _knn_sets(c, q, kk)
    jac = [len(set(x) & set(y)) / len(set(x) | set(y))
           for x, y in zip(a_sets.tolist(), b_sets.tolist(), strict=True)]
    r, _scale = orthogonal_procrustes(p.astype(np.float64), c.astype(np.float64))
    aligned = np.linalg.norm(p @ r - c, axis=1).mean()
    details["raw_distance"] = float(np.linalg.norm(p - c, axis=1).mean())
    details["seconds"] = round(time.perf_counter() - t0, 3)
    return TaskResult("stability", "", {"jaccard_at_10": float(np.mean(jac)),
                                        "procrustes_distance": float(aligned),
                                        "n_common": float(n)}, {}, int(len(q)), details)


# ---------------------------------------------------------------------- snapshot entry
def evaluate(
    task: str,
    emb: Embeddings,
    dataset: str,
    *,
    prev: Embeddings | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    held_out: npt.NDArray[np.int64] | None = None,
) -> TaskResult:
    """Run one task on a snapshot's embeddings (the worker's entry point).

    Parameters
    ----------
    task
        One of :data:`TASKS`.
    emb
        The snapshot's embeddings.
    dataset
        Data set whose labels/graph the task reads (see :func:`task_needs`); ignored by
        ``stability`` (pass ``""``).
    prev
        The previous snapshot of the same type (``stability`` only).
    seed
        As the task functions.
    data_dir
        Data folder (default :func:`streamer.datasets.data_dirs`).
    held_out
        ``follow-jaccard`` only: node indices (``load_graph(dataset)``) of edges the
        stream did not contain. A worker consuming a full follow-graph stream passes
        ``None``: friend pairs then come from edges the embeddings were trained on, so
        the score is *in-sample* (``details["protocol"] == "all edges"``), a fit/drift
        signal rather than a generalisation score. The held-out protocol is the offline
        runner's (:func:`streamer.bench.runner.run_task`); a producer that wants it live
        skips :func:`streamer.bench.runner.held_out_edges` and the worker passes the same
        edges here.

    Returns
    -------
    TaskResult

    Raises
    ------
    ConfigError
        If the task is unknown or does not apply to ``dataset``.
    BadRequest
        If ``stability`` gets no ``prev`` (the first snapshot of a type has none: skip
        it), or as the task functions.
    """
    if task == "stability":
        if prev is None:
            msg = "stability needs the previous snapshot (prev=None); skip the first snapshot"
            raise BadRequest(msg)
        return stability(prev, emb, seed=seed)
    task_needs(task, dataset)
    if task == "topic":
        return topic(emb, dataset, seed=seed, data_dir=data_dir)
    if task == "metadata":
        return metadata(emb, dataset, seed=seed, data_dir=data_dir)
    return follow_jaccard(emb, load_graph(dataset, data_dir), held_out=held_out, seed=seed,
                          dataset=dataset)


def run_task(task: str, dataset: str, types: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Stream ``dataset`` through each embedding type and evaluate ``task`` (offline).

    A re-export of :func:`streamer.bench.runner.run_task` (same parameters, returns and
    errors), imported on call because the runner imports this module.
    """
    from streamer.bench.runner import run_task as _run

    return _run(task, dataset, types, **kwargs)
