"""Python client mirroring the HTTP API (httpx).

Examples
--------
>>> c = Client("http://127.0.0.1:8080")          # doctest: +SKIP
>>> c.neighbours("wiki-cooc", "i:8300", k=5)     # doctest: +SKIP
[('i:8301', 0.93), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from streamer.errors import BadRequest, StreamerError, UnknownEntity, UnknownType


class ApiError(StreamerError):
    """The server answered with an error status; ``status`` holds it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Blocking client of ``streamer serve``.

    Parameters
    ----------
    base_url
        e.g. ``http://127.0.0.1:8080``.
    token
        Bearer token, if the server requires one.
    timeout_s
        Per-request timeout in wall seconds.

    Raises
    ------
    UnknownType, UnknownEntity, BadRequest, ApiError
        Mapped from the server's 404/400/422/other answers, with its one-line message.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 10.0):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> Any:
        if r.status_code < 400:
            return r.json()
        try:
            msg = r.json().get("error", r.text)
        except ValueError:
            msg = r.text
        if r.status_code == 404:
            if "type" in msg and "unknown embedding type" in msg:
                raise UnknownType(msg)
            raise UnknownEntity(msg)
        if r.status_code in (400, 422):
            raise BadRequest(msg)
        raise ApiError(r.status_code, msg)

    def health(self) -> dict[str, Any]:
        """Return ``/health``."""
        return self._check(self._http.get("/health"))

    def types(self) -> list[dict[str, Any]]:
        """Return the served types with metadata and freshness."""
        return self._check(self._http.get("/v1/types"))["types"]

    def get(self, type_name: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Batch get: one dict per id (``found``, ``vector``, ``updated_at``, ...)."""
        body = {"ids": list(ids)}
        return self._check(self._http.post(f"/v1/types/{type_name}/embeddings", json=body))["items"]

    def neighbours(self, type_name: str, entity: str, k: int = 10,
                   kind: str | None = None) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``entity``'s vector."""
        params: dict[str, Any] = {"k": k}
        if kind:
            params["kind"] = kind
        data = self._check(self._http.get(f"/v1/types/{type_name}/neighbours/{entity}",
                                          params=params))
        return [(n["id"], n["score"]) for n in data["neighbours"]]

    def neighbours_by_vector(self, type_name: str, vector: Sequence[float], k: int = 10,
                             kind: str | None = None) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``vector``."""
        body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": k, "kind": kind}
        data = self._check(self._http.post(f"/v1/types/{type_name}/neighbours", json=body))
        return [(n["id"], n["score"]) for n in data["neighbours"]]
