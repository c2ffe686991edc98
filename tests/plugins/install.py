"""Install a plug-in source tree the way ``pip install`` would, without pip or a network.

``install_distribution(src, site)`` reads ``src/pyproject.toml`` (name, version,
entry points, ``py-modules``), copies the modules into ``site`` and writes
``<name>-<version>.dist-info/`` with ``METADATA``, ``entry_points.txt`` and ``RECORD``.
With ``site`` on ``sys.path``, :func:`importlib.metadata.entry_points` discovers the
plug-in exactly as it discovers an installed package's.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

PLUGINS = Path(__file__).resolve().parent
EXAMPLE_SRC = PLUGINS / "example_plugin"
EXAMPLE_MODULE = "example_streamer_plugin"


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def install_distribution(src: Path, site: Path) -> Path:
    """Install the project at ``src`` into directory ``site``; return its dist-info path."""
    project = tomllib.loads((src / "pyproject.toml").read_text())
    meta = project["project"]
    modules = project["tool"]["setuptools"]["py-modules"]
    site.mkdir(parents=True, exist_ok=True)
    files = []
    for mod in modules:
        shutil.copy(src / f"{mod}.py", site / f"{mod}.py")
        files.append(f"{mod}.py")
    dist_info = site / f"{_dist_name(meta['name'])}-{meta['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
        f"Summary: {meta.get('description', '')}\n")
    lines = []
    for group, eps in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in eps.items())
        lines.append("")
    (dist_info / "entry_points.txt").write_text("\n".join(lines))
    files += [f"{dist_info.name}/{f}" for f in ("METADATA", "entry_points.txt", "RECORD")]
    (dist_info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return dist_info
