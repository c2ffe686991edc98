"""Bench server for ``benchmarks/store.py``: ``streamer serve``'s HTTP app, fed from a file.

Runs the same app as ``streamer serve`` (:func:`streamer.serve.api.create_api` over one
:class:`~streamer.serve.served.ServedType` with a kinded HNSW index built from the
settings' index parameters, ``uvicorn.run(..., log_level="warning")``) but loads the
vectors from an ``.npz`` file instead of tailing Kafka, so the HTTP latency of a batch
get can be measured in a separate process without a broker.

The ``.npz`` (written by ``benchmarks/store.py``, no pickled objects) holds::

    ids            (n,)      unicode   namespaced ids (u:... / i:...)
    vectors        (n, dim)  float32
    updated_at     (n,)      float64   event seconds
    update_count   (n,)      int64
    model_version  (n,)      int32

Usage: ``python benchmarks/_store_server.py --npz F --type NAME --version V --port P``.
The process serves until SIGTERM/SIGINT (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streamer.index.hnsw import HnswIndex  # noqa: E402
from streamer.index.kinded import KindedIndex  # noqa: E402
from streamer.serve.served import ServedType  # noqa: E402
from streamer.store.base import FeatureRecord  # noqa: E402

NPZ_FIELDS = ("ids", "vectors", "updated_at", "update_count", "model_version")


def write_npz(path: Path, ids: list[str], records: list[FeatureRecord]) -> None:
    """Write ``ids`` and their records in the layout :func:`load_served` reads."""
    np.savez(
        path,
        ids=np.array(ids, dtype=np.str_),
        vectors=np.stack([r.vector for r in records]).astype(np.float32),
        updated_at=np.array([r.updated_at for r in records], np.float64),
        update_count=np.array([r.update_count for r in records], np.int64),
        model_version=np.array([r.model_version for r in records], np.int32),
    )


def build_served(name: str, version: int, ids: list[str], records: list[FeatureRecord]
                 ) -> ServedType:
    """Return a ServedType holding ``records``, indexed as ``streamer serve`` indexes.

    The index is a :class:`KindedIndex` of :class:`HnswIndex` children with the
    settings' parameters (``Settings().index.hnsw_params()``, ``STREAMER_INDEX__*``),
    filled by one :meth:`ServedType.apply` call; the type is marked caught up.
    """
    from streamer.settings import Settings

    dim = int(records[0].vector.shape[0])
    hnsw = Settings().index.hnsw_params()
    st = ServedType(name=name, version=version, dim=dim,
                    index=KindedIndex(dim, factory=partial(HnswIndex, **hnsw)))
    st.apply(ids, records)
    st.caught_up = True
    return st


def load_served(path: Path, name: str, version: int) -> ServedType:
    """Build the ServedType of :func:`build_served` from an ``.npz`` of :func:`write_npz`."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in NPZ_FIELDS}
    ids = [str(i) for i in data["ids"]]
    recs = [FeatureRecord(vector=v, updated_at=float(t), update_count=int(c),
                          model_version=int(m))
            for v, t, c, m in zip(data["vectors"], data["updated_at"], data["update_count"],
                                  data["model_version"], strict=True)]
    return build_served(name, version, ids, recs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--npz", type=Path, required=True)
    parser.add_argument("--type", required=True, help="served type name")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import uvicorn

    from streamer.serve.api import create_api

    st = load_served(args.npz, args.type, args.version)
    api = create_api({args.type: st})
    try:
        uvicorn.run(api, host=args.host, port=args.port, log_level="warning")
    finally:
        st.index.close()


if __name__ == "__main__":
    main()
