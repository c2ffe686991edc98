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
from urllib.parse import quote

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
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code < 400:
            if not isinstance(body, dict):
                msg = (f"{r.request.url} answered {r.status_code} without a JSON object; "
                       "is --api pointing at `streamer serve`?")
                raise ApiError(r.status_code, msg)
            return body
        msg = body.get("error") if isinstance(body, dict) else None
        if not msg:
            msg = (f"{r.request.url} answered {r.status_code} "
                   f"({r.reason_phrase or 'error'}); is --api pointing at `streamer serve`?")
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
        return _field(self._check(self._http.get("/v1/types")), "types")

    def get(self, type_name: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        """Batch get: one dict per id (``found``, ``vector``, ``updated_at``, ...)."""
        body = {"ids": list(ids)}
        path = f"/v1/types/{quote(type_name, safe='')}/embeddings"
        return _field(self._check(self._http.post(path, json=body)), "items")

    def neighbours(self, type_name: str, entity: str, k: int = 10,
                   kind: str | None = None) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``entity``'s vector."""
        params: dict[str, Any] = {"k": k}
        if kind:
            params["kind"] = kind
        path = f"/v1/types/{quote(type_name, safe='')}/neighbours/{quote(entity, safe=':')}"
        data = self._check(self._http.get(path, params=params))
        return [(n["id"], n["score"]) for n in _field(data, "neighbours")]

    def neighbours_by_vector(self, type_name: str, vector: Sequence[float], k: int = 10,
                             kind: str | None = None) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``vector``."""
        body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": k, "kind": kind}
        path = f"/v1/types/{quote(type_name, safe='')}/neighbours"
        data = self._check(self._http.post(path, json=body))
        return [(n["id"], n["score"]) for n in _field(data, "neighbours")]


def _field(body: dict[str, Any], key: str) -> Any:
    """Return ``body[key]``; ApiError if the server's answer lacks it (not a streamer API)."""
    if key not in body:
        msg = f"the API answer has no {key!r} field; is --api pointing at `streamer serve`?"
        raise ApiError(200, msg)
    return body[key]
