"""Discovery web page served by the API at ``GET /`` (placeholder, being built)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def install_page(app: FastAPI) -> None:
    """Add ``GET /`` (the discovery page) to ``app``."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return "<!doctype html><title>streamer</title><p>streamer</p>"
