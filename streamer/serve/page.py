"""Discovery web page served by the API at ``GET /`` (DESIGN §9).

One self-contained HTML file (``discovery.html`` beside this module, shipped as package
data): inline CSS and vanilla JavaScript, no external script, style sheet or font, so it
works on a machine without internet access. The page itself holds no data and is served
without the bearer token; its script reads the JSON routes (``/v1/types``,
``/v1/types/{type}/benchmarks``, ``/v1/types/{type}/neighbours/{id}``, ``/v1/alerts``)
with the token a user types in (kept in ``sessionStorage``), and renders:

* one card per type: registry metadata (versions and their status, owner, codec, TTL,
  half-life, ...), freshness (event time of the newest event, its age relative to the
  newest type, lag, caught-up) and the latest benchmark scores;
* benchmark history: one inline-SVG line plot per ``task[/dataset].metric`` series over
  snapshots (x = snapshot event time), the first baseline dashed, drift alerts marked;
* the open drift alerts of every type;
* a neighbour lookup form (type, id, k, kind) with a results table, or the API's
  one-line error.

Every value from the API is inserted with ``textContent`` or as an attribute value,
never as markup. The response carries a Content-Security-Policy that allows only the
page's own inline script and style (by SHA-256 hash) and requests to the same origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

__all__ = ["PAGE_FILE", "install_page", "page_csp", "page_html"]

PAGE_FILE = "discovery.html"
"""Name of the page's HTML file inside the ``streamer.serve`` package."""


@lru_cache(maxsize=1)
def page_html() -> str:
    """Return the discovery page's HTML (read once from the package data).

    Raises
    ------
    FileNotFoundError
        If the package was installed without its data file (see pyproject's
        ``[tool.setuptools.package-data]``).
    """
    return resources.files("streamer.serve").joinpath(PAGE_FILE).read_text(encoding="utf-8")


def _hashes(html: str, tag: str) -> list[str]:
    """Return CSP source expressions (``'sha256-...'``) of every inline ``<tag>`` body."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in bodies]


@lru_cache(maxsize=1)
def page_csp() -> str:
    """Return the page's Content-Security-Policy header value.

    Only the page's own inline ``<script>`` and ``<style>`` blocks run (allowed by their
    SHA-256 hashes, CSP Level 2), ``fetch`` may reach only the same origin, and nothing
    else loads (``default-src 'none'``); the favicon is an empty ``data:`` URL.
    """
    html = page_html()
    return "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(_hashes(html, "script")),
        "style-src " + " ".join(_hashes(html, "style")),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def install_page(app: FastAPI) -> None:
    """Add ``GET /`` (the discovery page) to ``app``.

    Parameters
    ----------
    app
        The API app (:func:`streamer.serve.api.create_api`); ``/`` must be one of its
        public paths, since the page asks the user for the token itself.

    Raises
    ------
    FileNotFoundError
        If the page's HTML file is missing from the installed package.
    """
    html = page_html()
    headers = {
        "Content-Security-Policy": page_csp(),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)
