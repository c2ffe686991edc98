"""Python client mirroring the HTTP API (httpx).

Examples
--------
>>> c = Client("http://127.0.0.1:8080")          # doctest: +SKIP
>>> c.neighbours("wiki-cooc", "i:8300", k=5)     # doctest: +SKIP
[('i:8301', 0.93), ...]
>>> [(i["id"], i["status"]) for i in c.get("wiki-cooc", ["i:8300", "i:nope"])]  # doctest: +SKIP
[('i:8300', 'fresh'), ('i:nope', 'missing')]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

import httpx
import orjson

from streamer import errors
from streamer.errors import BadRequest, StreamerError, UnknownEntity, UnknownType


class ApiError(StreamerError):
    """The server answered with an error status; ``status`` holds it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unauthorized(ApiError):
    """401: the bearer token is missing or wrong (``--token`` / ``STREAMER_API_TOKEN``)."""

    http_status: ClassVar[int] = 401


class Neighbour(NamedTuple):
    """One neighbour as answered: id, cosine similarity, and whether it is expired (TTL)."""

    id: str
    score: float
    expired: bool


def _error_class(code: object) -> type[StreamerError] | None:
    """Return the StreamerError subclass the server named in ``"code"``, if we know it."""
    if code == "UnknownSnapshot":
        from streamer.serve.snapshots import UnknownSnapshot

        return UnknownSnapshot
    cls = getattr(errors, code, None) if isinstance(code, str) else None
    if isinstance(cls, type) and issubclass(cls, StreamerError):
        return cls
    return None


class Client:
    """Blocking client of ``streamer serve``.

    Parameters
    ----------
    base_url
        e.g. ``http://127.0.0.1:8080``.
    token
        Bearer token, if the server requires one; ``None`` (the default) reads the
        ``STREAMER_API_TOKEN`` environment variable, as the CLI does; ``""`` sends none.
    timeout_s
        Per-request timeout in wall seconds.

    Raises
    ------
    Unauthorized
        401: missing or wrong token.
    UnknownType, UnknownEntity, UnknownSnapshot, BadRequest, DimensionMismatch, InvalidVector
        The error the server named (``"code"``), with its one-line message; a 4xx
        without a code maps to UnknownEntity (404) or BadRequest (400/422).
    ApiError
        Any other error status.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 10.0):
        if token is None:
            token = os.environ.get("STREAMER_API_TOKEN")
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
        try:  # orjson: 0.4 ms instead of 3 ms for a 100-vector answer (benchmarks/store.py)
            body = orjson.loads(r.content)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            body = None
        if r.status_code < 400:
            if not isinstance(body, dict):
                msg = (f"{r.request.url} answered {r.status_code} without a JSON object; "
                       "is --api pointing at `streamer serve`?")
                raise ApiError(r.status_code, msg)
            return body
        msg = body.get("error") if isinstance(body, dict) else None
        if not msg or not isinstance(msg, str):
            msg = (f"{r.request.url} answered {r.status_code} "
                   f"({r.reason_phrase or 'error'}); is --api pointing at `streamer serve`?")
        if r.status_code == 401:
            raise Unauthorized(401, msg)
        cls = _error_class(body.get("code")) if isinstance(body, dict) else None
        if cls is not None:
            raise cls(msg)
        if r.status_code == 404:
            if "unknown embedding type" in msg:  # servers from before error codes
                raise UnknownType(msg)
            raise UnknownEntity(msg)
        if r.status_code in (400, 422):
            raise BadRequest(msg)
        raise ApiError(r.status_code, msg)

    @staticmethod
    def _type_path(type_name: str, tail: str) -> str:
        return f"/v1/types/{quote(type_name, safe='')}/{tail}"

    def health(self) -> dict[str, Any]:
        """Return ``/health``."""
        return self._check(self._http.get("/health"))

    def types(self) -> list[dict[str, Any]]:
        """Return the served types with metadata and freshness."""
        return _field(self._check(self._http.get("/v1/types")), "types")

    def read(self, type_name: str, ids: Sequence[str], *, snapshot: int | str | None = None,
             include_expired: bool = False) -> dict[str, Any]:
        """Batch get, the whole answer (items as :meth:`get`).

        Keys: ``type``, ``version``, ``ttl_s``, ``watermark``, ``snapshot``, ``items``.
        ``watermark`` is the event time expiry is judged against (the live type's, or
        the snapshot's); ``snapshot`` is ``None`` or ``{"id", "event_time",
        "created_at"}``.

        Raises
        ------
        BadRequest
            ``ids`` is a single string (before any request is sent), or as the
            server answers (see the class).
        """
        if isinstance(ids, str | bytes):  # would be iterated character by character
            msg = (f"ids must be a list of ids, got a {type(ids).__name__} ({ids[:40]!r}); "
                   f"pass [{ids[:40]!r}]")
            raise BadRequest(msg)
        body: dict[str, Any] = {"ids": list(ids)}
        if snapshot is not None:
            body["snapshot"] = snapshot
        if include_expired:
            body["include_expired"] = True
        data = self._check(self._http.post(self._type_path(type_name, "embeddings"),
                                           json=body))
        _field(data, "items")
        return data

    def get(self, type_name: str, ids: Sequence[str], *, snapshot: int | str | None = None,
            include_expired: bool = False) -> list[dict[str, Any]]:
        """Batch get: one dict per id, in order.

        Parameters
        ----------
        type_name
            ``NAME`` (the live version) or ``NAME.vN``.
        ids
            1..1000 namespaced ids.
        snapshot
            Read as of this snapshot id (see :meth:`snapshots`) instead of live.
        include_expired
            Return the vectors of expired ids too (still marked expired).

        Returns
        -------
        list of dict
            ``{"id", "status", "found", "expired", "vector", "updated_at",
            "update_count", "model_version"}``: ``status`` is ``"fresh"``,
            ``"expired"`` or ``"missing"``; ``vector`` is a list of ``dim`` floats or
            ``None`` (missing, or expired without ``include_expired``).

        Raises
        ------
        BadRequest
            ``ids`` is a str (one id: pass ``[id]``), or the server refused an id.
        """
        return self.read(type_name, ids, snapshot=snapshot,
                         include_expired=include_expired)["items"]

    def snapshots(self, type_name: str) -> list[dict[str, Any]]:
        """Return the type's snapshots, oldest first.

        Each is ``{"id", "event_time", "events_applied", "created_at", "entities",
        "trigger"}`` (event time in event seconds, ``created_at`` in wall seconds).
        """
        return _field(self._check(self._http.get(self._type_path(type_name, "snapshots"))),
                      "snapshots")

    def neighbours_flagged(self, type_name: str, entity: str, k: int = 10,
                           kind: str | None = None, *, fresh_only: bool = False
                           ) -> list[Neighbour]:
        """Return up to ``k`` neighbours of ``entity``'s vector with their expiry flag.

        ``fresh_only`` leaves expired neighbours out (the server searches deeper so
        that ``k`` fresh ones come back when they exist).
        """
        params: dict[str, Any] = {"k": k}
        if kind:
            params["kind"] = kind
        if fresh_only:
            params["fresh_only"] = "true"
        path = self._type_path(type_name, f"neighbours/{quote(entity, safe=':')}")
        return _neighbours(self._check(self._http.get(path, params=params)))

    def neighbours(self, type_name: str, entity: str, k: int = 10,
                   kind: str | None = None, *, fresh_only: bool = False
                   ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``entity``'s vector."""
        return [(n.id, n.score) for n in self.neighbours_flagged(
            type_name, entity, k, kind, fresh_only=fresh_only)]

    def neighbours_by_vector_flagged(self, type_name: str, vector: Sequence[float],
                                     k: int = 10, kind: str | None = None, *,
                                     fresh_only: bool = False) -> list[Neighbour]:
        """Return up to ``k`` neighbours of ``vector`` (``dim`` floats) with expiry flags."""
        body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": k, "kind": kind,
                                "fresh_only": fresh_only}
        return _neighbours(self._check(self._http.post(self._type_path(type_name,
                                                                       "neighbours"),
                                                       json=body)))

    def neighbours_by_vector(self, type_name: str, vector: Sequence[float], k: int = 10,
                             kind: str | None = None, *, fresh_only: bool = False
                             ) -> list[tuple[str, float]]:
        """Return up to ``k`` ``(id, cosine similarity)`` nearest to ``vector``."""
        return [(n.id, n.score) for n in self.neighbours_by_vector_flagged(
            type_name, vector, k, kind, fresh_only=fresh_only)]


def _neighbours(data: dict[str, Any]) -> list[Neighbour]:
    return [Neighbour(n["id"], n["score"], bool(n.get("expired", False)))
            for n in _field(data, "neighbours")]


def _field(body: dict[str, Any], key: str) -> Any:
    """Return ``body[key]``; ApiError if the server's answer lacks it (not a streamer API)."""
    if key not in body:
        msg = f"the API answer has no {key!r} field; is --api pointing at `streamer serve`?"
        raise ApiError(200, msg)
    return body[key]
