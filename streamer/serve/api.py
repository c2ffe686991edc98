"""HTTP API (FastAPI) over served embedding types (DESIGN §9).

Routes (JSON; ids are namespaced: ``u:<user_id>`` or ``i:<item_id>``):

* ``GET  /health``, ``GET /v1/types``, ``GET /v1/types/{type}``
* ``GET  /v1/types/{type}/embeddings?ids=ID&ids=ID[&snapshot=3][&include_expired=true]``
  and ``POST`` with ``{"ids": [...], "snapshot": 3, "include_expired": false}``: each item
  ``fresh``/``expired``/``missing`` (TTL in event time), live or as of a snapshot.
  Repeat ``ids`` for several ids: ``?ids=u:0,i:1`` is *one* id, since a user or item
  id may contain a comma (any 1..256-character string, :mod:`streamer.events.schema`)
* ``GET  /v1/types/{type}/snapshots``: the snapshot ids with event time and events applied
* ``GET  /v1/types/{type}/neighbours/{id}?k=10&kind=item&fresh_only=true``
* ``POST /v1/types/{type}/neighbours`` with
  ``{"vector": [...], "k": 10, "kind": "item", "fresh_only": false}``
* ``GET  /v1/types/{type}/benchmarks?limit=200``: snapshots, latest result per task,
  results, alerts and open alerts (from the ``benchmarks`` topic)
* ``GET  /v1/alerts``: open drift alerts of every type, and their history

Every :class:`streamer.errors.StreamerError` maps to its ``http_status`` with
``{"error": "<one line>", "code": "<error class name>"}``; request validation errors
(malformed JSON, a missing or mistyped field) are 422 with ``"code": "BadRequest"``,
and a missing or wrong token is 401 with ``"code": "Unauthorized"``. HTTP-level
errors keep their status with the same shape: 404 ``NotFound`` (no such route), 405
``MethodNotAllowed``, 400 ``BadRequest`` (an unparsable body) and 413
``PayloadTooLarge`` (a body over :data:`MAX_BODY_BYTES`).
An optional bearer token (``STREAMER_API_TOKEN``) is required on every route but /health;
the scheme is case-insensitive (``Bearer``/``bearer``, RFC 7235 §2.1).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamer.errors import StreamerError, UnknownType
from streamer.registry import latest_scores
from streamer.serve.benchboard import BenchBoard
from streamer.serve.catalog import Catalog
from streamer.serve.page import install_page
from streamer.serve.served import Neighbour, ServedType

#: Routes served without the bearer token: liveness, and the discovery page's static shell.
PUBLIC_PATHS = frozenset({"/health", "/"})

#: Largest request body accepted (bytes): 1000 ids of 300 characters are ~0.3 MB as JSON,
#: a vector of 10^5 floats ~2.5 MB.
MAX_BODY_BYTES = 4 * 1024 * 1024

#: ``"code"`` of the HTTP-level errors (no route, wrong method, unparsable body...).
_HTTP_CODES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound",
               405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def _too_large_message(size: int, limit: int, *, chunked: bool = False) -> str:
    if chunked:
        return (f"request body of at least {size} bytes (sent without Content-Length) is "
                f"too large; expected at most {limit} bytes")
    return f"request body of {size} bytes is too large; expected at most {limit} bytes"


class BodyLimit:
    """Pure ASGI middleware refusing request bodies over ``max_bytes`` with a 413.

    A ``Content-Length`` above the limit is answered at once, before any of the body is
    read; a body without one (chunked) is counted while the route reads it, and the
    read raises a 413 :class:`~starlette.exceptions.HTTPException` once it goes over.
    Responses pass through untouched (no buffering, no re-encoding).

    FastAPI's own ``max_body_size`` is not used: its outermost middleware replaces an
    over-limit answer with a plain-text 413, outside our ``{"error", "code"}`` shape.

    Parameters
    ----------
    app
        The ASGI app to wrap.
    max_bytes
        Largest accepted body, in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:  # the server never delivers more than Content-Length
            size = int(length) if length.isdigit() else 0  # servers reject bad values
            if size > self.max_bytes:
                body = {"error": _too_large_message(size, self.max_bytes),
                        "code": "PayloadTooLarge"}
                await JSONResponse(body, status_code=413)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large_message(received, limit,
                                                                chunked=True))
            return message

        await self.app(scope, limited, send)


def _route_hint(app: FastAPI, path: str) -> str:
    """Name the routes nearest ``path`` (longest shared leading segments), for a 404."""
    parts = path.strip("/").split("/")
    best: dict[str, set[str]] = {}
    best_n = 1  # sharing only "v1" is no hint
    for route in app.routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        tpl = route.path.strip("/").split("/")
        n = 0
        for a, b in zip(parts, tpl, strict=False):
            if a != b and not b.startswith("{"):
                break
            n += 1
        if n > best_n:
            best, best_n = {}, n
        if n == best_n:
            best.setdefault(route.path, set()).update(route.methods or ())
    shown = [f"{','.join(sorted(m - {'HEAD'}))} {p}" for p, m in sorted(best.items())][:4]
    return f"; nearest: {'; '.join(shown)}" if shown else ""


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (Starlette names one route's)."""
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def _http_message(app: FastAPI, request: Request, exc: HTTPException) -> str:
    """One line for an HTTP-level error, naming the method and path."""
    method, path = request.method, request.url.path
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"no route {method} {path}{_route_hint(app, path)}; see /docs"
    if exc.status_code == 405:
        allowed = ", ".join(_allowed_methods(app, request.scope)) or "?"
        return f"method {method} is not allowed on {path}; allowed: {allowed}; see /docs"
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        cause = exc.__cause__
        why = ("JSON nested too deeply" if isinstance(cause, RecursionError)
               else type(cause).__name__ if cause is not None else "unreadable")
        return (f"could not parse the body of {method} {path} ({why}); "
                "expected a JSON object")
    if exc.status_code == 413:
        return str(exc.detail)
    return f"{method} {path}: {' '.join(str(exc.detail).split())}"


class IdsBody(BaseModel):
    """Body of a batch get: ``{"ids": [...], "snapshot": 3, "include_expired": false}``.

    ``ids`` and ``snapshot`` are checked by :meth:`ServedType.read` (400 naming the bad
    id, the batch limit or the bad snapshot id); unknown fields are refused (422).
    """

    model_config = ConfigDict(extra="forbid")

    ids: list[Any]
    snapshot: Any = None
    include_expired: StrictBool = False


class VectorQuery(BaseModel):
    """Body of a neighbours-by-vector query (``k`` is checked by the served type: 400)."""

    model_config = ConfigDict(extra="forbid")

    vector: list[StrictFloat]  # numbers only: true/false and "1.5" are refused (422)
    k: int = 10
    kind: Literal["user", "item"] | None = None
    fresh_only: StrictBool = False


def _orjson(payload: object) -> Response:
    """Return a JSON response serialised by orjson (numpy vectors as is, no jsonable_encoder)."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _neighbours_json(res: list[Neighbour]) -> list[dict[str, object]]:
    return [{"id": n.id, "score": n.score, "expired": n.expired} for n in res]


def _validation_message(errors: list[Any]) -> str:
    """One line for a request validation error: where, and what was expected."""
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "JSON decode error")
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"malformed JSON body: {why}{at}; expected a JSON object"
    if first.get("type") == "missing" and loc == ("body",):
        return "missing JSON body; expected a JSON object"
    where = ".".join(str(p) for p in loc)
    return f"invalid {where}: {first.get('msg', 'bad request')}"


def create_api(types: Mapping[str, ServedType], *, token: str | None = None,
               board: BenchBoard | None = None) -> FastAPI:
    """Build the FastAPI app over ``types`` (name -> ServedType).

    Parameters
    ----------
    types
        Served types, looked up by name on each request (may grow while running).
    token
        If set, every route except ``/health`` requires ``Authorization: Bearer <token>``.
    board
        Benchmark results and drift alerts (from the ``benchmarks`` topic); ``None``
        serves empty lists.
    """
    board = board if board is not None else BenchBoard()
    app = FastAPI(title="streamer", version="0.1.0")

    @app.exception_handler(StreamerError)
    async def _streamer_error(request: Request, exc: StreamerError) -> JSONResponse:  # noqa: ARG001
        return JSONResponse({"error": str(exc), "code": type(exc).__name__},
                            status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        msg = _validation_message(list(exc.errors()))
        return JSONResponse({"error": msg, "code": "BadRequest"}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code
        code = _HTTP_CODES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return JSONResponse({"error": _http_message(app, request, exc), "code": code},
                            status_code=status, headers=headers or None)

    # inside the auth middleware (added later, so outer): the 413 of a chunked body is
    # raised by the route's read, under FastAPI's exception handlers, never within
    # BaseHTTPMiddleware's task group (which would wrap it in an ExceptionGroup)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    if token:
        expected = token.encode()

        @app.middleware("http")
        async def _auth(request: Request, call_next):  # type: ignore[no-untyped-def]
            # /health and the page shell (no data; it asks for the token) are open
            if request.url.path not in PUBLIC_PATHS:
                got = request.headers.get("authorization", "")
                scheme, _, credentials = got.strip().partition(" ")
                # the scheme is case-insensitive (RFC 7235 §2.1); the token is compared
                # in constant time whatever the scheme, so timing tells nothing
                ok = hmac.compare_digest(credentials.strip().encode(), expected)
                if not (ok and scheme.lower() == "bearer"):
                    why = "wrong" if got else "missing"
                    return JSONResponse(
                        {"error": f"{why} bearer token; expected 'Authorization: Bearer "
                                  "<STREAMER_API_TOKEN>'", "code": "Unauthorized"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    catalog = types if isinstance(types, Catalog) else None

    def served(name: str, *, allow_retired: bool = False) -> ServedType:
        if catalog is not None:  # NAME (live version) or NAME.vN, through the registry
            return catalog.resolve(name, allow_retired=allow_retired)
        t = types.get(name)
        if t is None:
            known = ", ".join(sorted(types)) or "(none)"
            msg = f"unknown embedding type {name!r}; served types: {known}"
            raise UnknownType(msg)
        return t

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"status": "ok", "types": {n: t.caught_up for n, t in types.items()}}

    def scores(t: ServedType) -> dict[str, object]:
        latest = board.for_type(t.name, 1, version=t.version)["latest"]
        return latest_scores(latest.values())

    def describe_one(t: ServedType) -> dict[str, object]:
        if catalog is None:
            return t.describe()
        return catalog.entry(t, scores(t))

    @app.get("/v1/types")
    def list_types() -> dict[str, object]:
        if catalog is None:
            return {"types": [t.describe() for _, t in sorted(types.items())]}
        # every served version (live, candidate and retired), live ones first
        entries = [describe_one(t) for _, t in sorted(catalog.versions().items())]
        entries.sort(key=lambda e: (e["status"] != "live", e["name"], e["version"]))
        return {"types": entries, "registry_error": catalog.registry_error}

    @app.get("/v1/types/{name}")
    def describe(name: str) -> dict[str, object]:
        # metadata of a retired version stays readable ("status": "retired"); its data 410
        return describe_one(served(name, allow_retired=True))

    # The batch get is the hot path: it answers with orjson bytes (numpy vectors as is,
    # no jsonable_encoder) and runs on the event loop, skipping the threadpool hop; a
    # live read only takes ServedType's short dict lock. A read as of a snapshot may
    # touch the disk (first open, page faults), so it runs in the threadpool.
    async def batch_get(name: str, ids: list[Any], snapshot: object,
                        include_expired: bool) -> Response:
        t = served(name)
        if snapshot is None:
            return _orjson(t.read(ids, include_expired=include_expired))
        answer = await run_in_threadpool(t.read, ids, snapshot=snapshot,
                                         include_expired=include_expired)
        return _orjson(answer)

    @app.get("/v1/types/{name}/embeddings", response_class=Response)
    async def get_embeddings(name: str, ids: list[str] = Query(  # noqa: B008
                                 ..., description="repeat for several ids: ?ids=u:0&ids=i:1 "
                                 "(a comma is part of an id, not a separator)"),
                             snapshot: str | None = None,
                             include_expired: bool = False) -> Response:
        return await batch_get(name, ids, snapshot, include_expired)

    @app.post("/v1/types/{name}/embeddings", response_class=Response)
    async def post_embeddings(name: str, body: IdsBody) -> Response:
        return await batch_get(name, body.ids, body.snapshot, body.include_expired)

    @app.get("/v1/types/{name}/snapshots")
    def snapshots(name: str) -> dict[str, object]:
        t = served(name)
        return {"type": t.name, "version": t.version, "snapshots": t.snapshots()}

    @app.get("/v1/types/{name}/neighbours/{entity:path}")
    def neighbours(name: str, entity: str, k: int = 10,
                   kind: Literal["user", "item"] | None = None,
                   fresh_only: bool = False) -> dict[str, object]:
        t = served(name)
        res = t.neighbours_by_id(entity, k, kind, fresh_only=fresh_only)
        return {"type": t.name, "version": t.version, "id": entity, "k": k, "kind": kind,
                "fresh_only": fresh_only, "ttl_s": t.ttl_s, "watermark": t.watermark,
                "neighbours": _neighbours_json(res)}

    @app.get("/v1/types/{name}/benchmarks")
    def benchmarks(name: str, limit: int = Query(200, ge=1, le=2000)) -> dict[str, object]:
        t = served(name)
        return board.for_type(t.name, limit, version=t.version)

    @app.get("/v1/alerts")
    def alerts() -> dict[str, object]:
        return board.alerts()

    @app.post("/v1/types/{name}/neighbours")
    def neighbours_by_vector(name: str, body: VectorQuery) -> dict[str, object]:
        t = served(name)
        res = t.neighbours_by_vector(body.vector, body.k, body.kind, fresh_only=body.fresh_only)
        return {"type": t.name, "version": t.version, "k": body.k, "kind": body.kind,
                "fresh_only": body.fresh_only, "ttl_s": t.ttl_s, "watermark": t.watermark,
                "neighbours": _neighbours_json(res)}

    install_page(app)
    return app
