"""Static benchmark tasks (topic, metadata, follow-Jaccard, stability) for every declared type.

Usage::

    python benchmarks/tasks.py --json                       # the standard matrix below
    python benchmarks/tasks.py --task topic --dataset lastfm-tags [--types wiki-sgns]
    python benchmarks/tasks.py --task topic --dataset lastfm-tags \\
        --param wiki-sgns:user_half_life_s=1e12              # try other params of a type

Prints one JSON object. With ``--task``/``--dataset``: the
:func:`streamer.bench.runner.run_task` output (``{"accuracy": {type: v, "majority": v,
"random": v}, "macro_f1": {...}, "n": ..., "seconds": {...}, ...}``). Without: ``{"runs":
[...]}`` over the standard matrix (topic on lastfm-tags and lastfm-plays; metadata on
lastfm-asia and deezer; follow-jaccard on lastfm-tags, lastfm-asia and deezer) plus
``seconds`` for the whole run. ``--brief`` drops each run's per-type ``results``.

``--param TYPE:key=value`` (repeatable) overrides one constructor parameter of a declared
type for this run only (value parsed as JSON, else kept as a string); the type keeps its
name. Data folder: ``--data-dir`` or ``$STREAMER_DATA_DIR`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streamer.bench.runner import run_task  # noqa: E402
from streamer.topology import TopologySpec, find_type  # noqa: E402
from topologies import TOPOLOGIES  # noqa: E402

MATRIX = (
    ("topic", "lastfm-tags"), ("topic", "lastfm-plays"),
    ("metadata", "lastfm-asia"), ("metadata", "deezer"),
    ("follow-jaccard", "lastfm-tags"), ("follow-jaccard", "lastfm-asia"),
    ("follow-jaccard", "deezer"),
)


def override(specs: tuple[TopologySpec, ...], pairs: list[str]) -> tuple[TopologySpec, ...]:
    """Return ``specs`` with ``TYPE:key=value`` parameter overrides applied."""
    params = {s.name: dict(s.params) for s in specs}
    for item in pairs:
        name, _, kv = item.partition(":")
        key, _, val = kv.partition("=")
        find_type(specs, name)
        if not key or not _:
            sys.exit(f"--param {item!r}: expected TYPE:key=value")
        try:
            params[name][key] = json.loads(val)
        except json.JSONDecodeError:
            params[name][key] = val
    return tuple(dataclasses.replace(s, params=params[s.name]) for s in specs)


def main() -> None:
    """Parse arguments, run, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task")
    ap.add_argument("--dataset")
    ap.add_argument("--types", help="comma-separated type names (default: all declared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--data-dir")
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--brief", action="store_true")
    ap.add_argument("--json", action="store_true", help="(default) print JSON")
    args = ap.parse_args()
    specs = override(TOPOLOGIES, args.param)
    types = args.types.split(",") if args.types else None
    kw = {"data_dir": args.data_dir, "seed": args.seed, "batch_size": args.batch,
          "specs": specs}
    if args.task or args.dataset:
        if not (args.task and args.dataset):
            sys.exit("--task and --dataset go together")
        out = run_task(args.task, args.dataset, types, **kw)
        if args.brief:
            out.pop("results")
    else:
        t0 = time.perf_counter()
        runs = []
        for task, dataset in MATRIX:
            r = run_task(task, dataset, types, **kw)
            if args.brief:
                r.pop("results")
            runs.append(r)
        out = {"runs": runs, "seconds": round(time.perf_counter() - t0, 1),
               "params": {s.name: dict(s.params) for s in specs}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
