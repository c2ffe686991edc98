"""Every index implementation x every contract check (CONVENTIONS C3, C14)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from streamer.checks.indexes import IndexFactory, yield_checks
from streamer.errors import BadRequest, InvalidVector, StateError
from streamer.index.base import load_index
from streamer.index.exact import ExactIndex
from streamer.index.hnsw import HnswIndex
from streamer.index.kinded import KindedIndex

FACTORIES: dict[str, IndexFactory] = {
    "exact": ExactIndex,
    # defaults: most small checks stay inside the exact delta buffer
    "hnsw": HnswIndex,
    # a small buffer: folds, capacity growth and rebuilds happen all the time
    "hnsw-small-delta": partial(HnswIndex, delta_max=7, initial_capacity=64, ef_construction=100),
    # no buffering at all: every upsert goes straight into the graph
    "hnsw-no-delta": partial(HnswIndex, delta_max=1, initial_capacity=16),
    # background maintenance thread: folds and rebuilds run concurrently with the checks
    "hnsw-background": partial(
        HnswIndex, background=True, delta_max=7, delta_cap=28, initial_capacity=64,
        ef_construction=100, max_pause_s=0.002,
    ),
    "kinded-exact": partial(KindedIndex, factory=ExactIndex),
    "kinded-hnsw": partial(
        KindedIndex, factory=partial(HnswIndex, delta_max=32, initial_capacity=64)
    ),
    "kinded-hnsw-background": partial(
        KindedIndex, factory=partial(HnswIndex, background=True, delta_max=16,
                                     initial_capacity=64)
    ),
}

CASES = [
    pytest.param(make, check, id=f"{name}:{check.__name__}")
    for name, make in FACTORIES.items()
    for check in yield_checks(make)
]


@pytest.mark.parametrize(("make", "check"), CASES)
def test_index_contract(make: IndexFactory, check, tmp_path: Path) -> None:
    check(make, tmp_path)


# ---------------------------------------------------------------- per-kind routing

CHILDREN = {"exact": ExactIndex, "hnsw": partial(HnswIndex, delta_max=8)}


@pytest.mark.parametrize("child", CHILDREN.values(), ids=CHILDREN.keys())
def test_kinded_routes_by_prefix_and_filters_by_kind(child) -> None:
    rng = np.random.default_rng(21)
    idx, oracle = KindedIndex(8, factory=child), ExactIndex(8)
    ids = [f"u:{j}" for j in range(30)] + [f"i:{j}" for j in range(30)]
    x = rng.standard_normal((60, 8)).astype(np.float32)
    for target in (idx, oracle):
        target.upsert(ids, x)
    assert len(idx.part("user")) == 30 and len(idx.part("item")) == 30
    assert "u:3" in idx and "i:3" in idx and "3" not in idx and 3 not in idx
    user_vector = idx.get(["u:0"])[0][0]
    items = idx.knn(user_vector, 5, kind="item")
    assert len(items) == 5 and all(e.startswith("i:") for e, _ in items)
    want_items = [e for e, _ in oracle.knn(user_vector, 5, exclude=ids[:30])]
    assert [e for e, _ in items] == want_items
    users = idx.knn(user_vector, 5, kind="user", exclude=["u:0"])
    assert all(e.startswith("u:") and e != "u:0" for e, _ in users)
    both = idx.knn_batch(x[:4], 6)
    assert [[e for e, _ in a] for a in both] == [
        [e for e, _ in a] for a in oracle.knn_batch(x[:4], 6)
    ]
    item_batch = idx.knn_batch(x[:3], 4, kind="item")
    assert all(e.startswith("i:") for a in item_batch for e, _ in a)


@pytest.mark.parametrize("child", CHILDREN.values(), ids=CHILDREN.keys())
def test_kinded_rejects_unprefixed_ids_and_bad_kinds(child) -> None:
    rng = np.random.default_rng(22)
    idx = KindedIndex(4, factory=child)
    idx.upsert(["u:a", "i:b"], rng.standard_normal((2, 4)))
    with pytest.raises(BadRequest, match="prefix"):
        idx.upsert(["u:c", "plain"], rng.standard_normal((2, 4)))
    with pytest.raises(InvalidVector, match="i:bad"):
        idx.upsert(["u:c", "i:bad"], np.vstack([rng.standard_normal(4), np.zeros(4)]))
    assert len(idx) == 2 and "u:c" not in idx  # nothing of a rejected call was applied
    with pytest.raises(BadRequest, match="kind"):
        idx.knn(rng.standard_normal(4), 1, kind="users")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        idx.part(None)  # type: ignore[arg-type]
    idx.delete(["plain", "u:a"])  # unprefixed ids are unknown ids: ignored
    assert len(idx) == 1


def test_kinded_save_load_keeps_child_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(23)
    idx = KindedIndex(4, factory=partial(HnswIndex, ef_search=33))
    idx.upsert(["u:a", "i:b", "i:c"], rng.standard_normal((3, 4)))
    idx.save(tmp_path)
    loaded = load_index(tmp_path)
    assert isinstance(loaded, KindedIndex)
    item_part = loaded.part("item")
    assert isinstance(item_part, HnswIndex) and item_part.ef_search == 33
    q = rng.standard_normal(4)
    assert loaded.knn(q, 3) == idx.knn(q, 3)
    with pytest.raises(StateError, match="kind"):
        HnswIndex.load(tmp_path)
