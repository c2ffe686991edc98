"""HTTP API (FastAPI) over served embedding types (DESIGN §9).

Routes (JSON; ids are namespaced: ``u:<user_id>`` or ``i:<item_id>``):

* ``GET  /health``, ``GET /v1/types``, ``GET /v1/types/{type}``
* ``GET  /v1/types/{type}/embeddings?ids=ID&ids=ID`` and ``POST`` with ``{"ids": [...]}``
* ``GET  /v1/types/{type}/neighbours/{id}?k=10&kind=item``
* ``POST /v1/types/{type}/neighbours`` with ``{"vector": [...], "k": 10, "kind": "item"}``
* ``GET  /v1/types/{type}/benchmarks?limit=200``: snapshots, latest result per task,
  results, alerts and open alerts (from the ``benchmarks`` topic)
* ``GET  /v1/alerts``: open drift alerts of every type, and their history

Every :class:`streamer.errors.StreamerError` maps to its ``http_status`` with
``{"error": "<one line>"}``; validation errors are 422 with a one-line message.
An optional bearer token (``STREAMER_API_TOKEN``) is required on every route but /health.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from streamer.errors import StreamerError, UnknownType
from streamer.serve.benchboard import BenchBoard
from streamer.serve.page import install_page
from streamer.serve.served import MAX_IDS, MAX_K, ServedType

#: Routes served without the bearer token: liveness, and the discovery page's static shell.
PUBLIC_PATHS = frozenset({"/health", "/"})


class IdsBody(BaseModel):
    """Body of a batch get."""

    ids: list[str] = Field(..., min_length=1, max_length=MAX_IDS)


class VectorQuery(BaseModel):
    """Body of a neighbours-by-vector query."""

    vector: list[float]
    k: int = Field(10, ge=1, le=MAX_K)
    kind: Literal["user", "item"] | None = None


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
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = f"invalid {where}: {first.get('msg', 'bad request')}"
        return JSONResponse({"error": msg}, status_code=422)

    if token:
        expected = f"Bearer {token}".encode()

        @app.middleware("http")
        async def _auth(request: Request, call_next):  # type: ignore[no-untyped-def]
            # /health and the page shell (no data; it asks for the token) are open
            if request.url.path not in PUBLIC_PATHS:
                got = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(got, expected):
                    return JSONResponse({"error": "missing or wrong bearer token"},
                                        status_code=401)
            return await call_next(request)

    def served(name: str) -> ServedType:
        t = types.get(name)
        if t is None:
            known = ", ".join(sorted(types)) or "(none)"
            msg = f"unknown embedding type {name!r}; served types: {known}"
            raise UnknownType(msg)
        return t

    def rec_json(entity: str, rec: object) -> dict[str, object]:
        if rec is None:
            return {"id": entity, "found": False}
        return {"id": entity, "found": True, "vector": rec.vector.tolist(),  # type: ignore[attr-defined]
                "updated_at": rec.updated_at, "update_count": rec.update_count,  # type: ignore[attr-defined]
                "model_version": rec.model_version}  # type: ignore[attr-defined]

    @app.get("/health")
    def health() -> dict[str, object]:
        return {"status": "ok", "types": {n: t.caught_up for n, t in types.items()}}

    @app.get("/v1/types")
    def list_types() -> dict[str, object]:
        return {"types": [t.describe() for _, t in sorted(types.items())]}

    @app.get("/v1/types/{name}")
    def describe(name: str) -> dict[str, object]:
        return served(name).describe()

    @app.get("/v1/types/{name}/embeddings")
    def get_embeddings(name: str, ids: list[str] = Query(...)) -> dict[str, object]:  # noqa: B008
        t = served(name)
        return {"type": name, "items": [rec_json(i, r) for i, r in zip(ids, t.get_many(ids),
                                                                       strict=True)]}

    @app.post("/v1/types/{name}/embeddings")
    def post_embeddings(name: str, body: IdsBody) -> dict[str, object]:
        t = served(name)
        return {"type": name, "items": [rec_json(i, r) for i, r in
                                        zip(body.ids, t.get_many(body.ids), strict=True)]}

    @app.get("/v1/types/{name}/neighbours/{entity:path}")
    def neighbours(name: str, entity: str, k: int = 10,
                   kind: Literal["user", "item"] | None = None) -> dict[str, object]:
        res = served(name).neighbours_by_id(entity, k, kind)
        return {"type": name, "id": entity, "k": k, "kind": kind,
                "neighbours": [{"id": i, "score": s} for i, s in res]}

    @app.get("/v1/types/{name}/benchmarks")
    def benchmarks(name: str, limit: int = Query(200, ge=1, le=2000)) -> dict[str, object]:
        served(name)
        return board.for_type(name, limit)

    @app.get("/v1/alerts")
    def alerts() -> dict[str, object]:
        return board.alerts()

    @app.post("/v1/types/{name}/neighbours")
    def neighbours_by_vector(name: str, body: VectorQuery) -> dict[str, object]:
        res = served(name).neighbours_by_vector(body.vector, body.k, body.kind)
        return {"type": name, "k": body.k, "kind": body.kind,
                "neighbours": [{"id": i, "score": s} for i, s in res]}

    install_page(app)
    return app
