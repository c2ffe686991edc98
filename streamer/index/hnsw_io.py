"""Saving and loading :class:`~streamer.index.hnsw.HnswIndex` directories.

Layout (``FORMAT_VERSION`` 1): ``graph.bin`` (hnswlib's own ``save_index``),
``delta.npy`` (the buffered unit vectors in row order) and ``manifest.json`` (written
last: parameters incl. ``ef_search``, which hnswlib does not save, the ``id -> label``
map, the buffered ids, counters). Loading cross-checks all three.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import hnswlib
import numpy as np

from streamer.errors import StateError
from streamer.index.base import FORMAT_VERSION, SPACE, read_manifest, write_manifest
from streamer.index.delta import DeltaBuffer

if TYPE_CHECKING:
    from streamer.index.hnsw import HnswIndex

GRAPH = "graph.bin"
DELTA = "delta.npy"


def save_hnsw(idx: HnswIndex, path: Path) -> None:
    """Write ``idx`` into directory ``path`` (see :meth:`HnswIndex.save`).

    Raises
    ------
    OSError
        The directory cannot be written.
    """
    from streamer.index.hnsw import _HNSW_SPACE, _hnswlib_version

    path.mkdir(parents=True, exist_ok=True)
    with idx._lock.read():
        tmp_graph = path / (GRAPH + ".tmp")
        idx._graph.save_index(str(tmp_graph))
        os.replace(tmp_graph, path / GRAPH)
        tmp_delta = path / (DELTA + ".tmp")
        with tmp_delta.open("wb") as fh:
            np.save(fh, idx._delta.vectors)
        os.replace(tmp_delta, path / DELTA)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "hnsw",
            "space": SPACE,
            "hnswlib_space": _HNSW_SPACE,
            "hnswlib_version": _hnswlib_version(),
            "dim": idx.dim,
            "params": idx._params(),
            "capacity": idx._graph.get_max_elements(),
            "element_count": idx._graph.element_count,
            "next_label": idx._next_label,
            "tombstones": idx._tombstones,
            "live": len(idx._label_of) + len(idx._delta),
            "labels": dict(idx._label_of),
            "delta_ids": list(idx._delta.ids),
            "files": {"graph": GRAPH, "delta": DELTA},
        }
    write_manifest(path, manifest)


def load_hnsw(cls: type[HnswIndex], path: Path) -> HnswIndex:
    """Read an index written by :func:`save_hnsw` (synchronous mode).

    Raises
    ------
    StateError
        Missing/foreign manifest, or data files that disagree with it.
    """
    manifest = read_manifest(path, "hnsw")
    try:
        dim = int(manifest["dim"])
        params = dict(manifest["params"])
        initial_capacity = int(params.pop("initial_capacity"))
        idx = cls(dim, initial_capacity=1, **params)
        idx.initial_capacity = initial_capacity
        label_of = {str(e): int(label) for e, label in manifest["labels"].items()}
        delta_ids = [str(e) for e in manifest["delta_ids"]]
        delta = np.load(path / manifest["files"]["delta"], allow_pickle=False)
        graph = hnswlib.Index(space=manifest["hnswlib_space"], dim=dim)
        graph_file = path / manifest["files"]["graph"]
        if not graph_file.is_file():
            msg = f"graph file {str(graph_file)!r} is missing"
            raise OSError(msg)
        graph.load_index(str(graph_file), max_elements=int(manifest["capacity"]))
        next_label = int(manifest["next_label"])
        tombstones = int(manifest["tombstones"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        msg = f"cannot load hnsw index from {str(path)!r}: {exc}"
        raise StateError(msg) from exc
    problems = []
    if graph.element_count != len(label_of) + tombstones:
        problems.append(
            f"graph holds {graph.element_count} slots but the manifest accounts for "
            f"{len(label_of)} live + {tombstones} tombstones"
        )
    if delta.shape != (len(delta_ids), dim) or delta.dtype != np.float32:
        problems.append(f"delta file has shape {delta.shape} {delta.dtype}, "
                        f"expected ({len(delta_ids)}, {dim}) float32")
    if len(set(delta_ids)) != len(delta_ids) or set(delta_ids) & label_of.keys():
        problems.append("an id is listed twice across labels and delta_ids")
    if len(set(label_of.values())) != len(label_of) or any(
        not 0 <= label < next_label for label in label_of.values()
    ):
        problems.append("the label map is not a bijection below next_label")
    if problems:
        msg = f"hnsw index at {str(path)!r} is inconsistent: " + "; ".join(problems)
        raise StateError(msg)
    idx._configure(graph)
    idx._graph = graph
    idx._label_of = label_of
    idx._id_of = {label: e for e, label in label_of.items()}
    idx._next_label = next_label
    idx._tombstones = tombstones
    idx._fp = np.zeros(graph.get_max_elements(), np.uint64)  # unknown until refolded/rebuilt
    buffer = DeltaBuffer(dim, max(16, min(idx.delta_max, 4096), len(delta_ids)))
    if delta_ids:
        buffer.put(delta_ids, delta, np.arange(1, len(delta_ids) + 1, dtype=np.int64))
    idx._delta = buffer
    idx._seq = len(delta_ids)
    return idx
