"""Online inference: a FastAPI app that serves ``@champion`` and follows the alias as it moves.

- **Models.** The app asks a `ml.serving.models.ModelService` for its models: by default one
  that follows a registry alias; tests pass one built around models fitted in the test.
- **Features.** The churn vector is read from the online store in the feature-set version
  the churn model was trained on; a history in the version the recommender was tagged with.

- **Hot path.** Handlers are ``async`` and score inline on the event-loop thread: one
  request, one thread, no thread-pool hop. The churn model runs through the compiled numpy
  fast path (`ml.serving.fastpath`), falling back to scikit-learn with one thread if it cannot be
  compiled. Features come from the online store (one key lookup) or from the request body.
  The churn route parses its body in one pydantic pass over the bytes (`parse_body`) and
  encodes its answer itself: FastAPI's body-parameter and response-model machinery cost
  more than the lookup and the model together (bench/RESULTS.md, row 0).
- **Batch.** ``POST /v1/churn/score/batch`` scores up to ``LOOPLINE_API_MAX_BATCH_ROWS`` rows
  (each a ``user_id`` or ``features``, as the single route takes them) with one model version,
  one online-store lookup for all the ids and one model call for all the rows. A row it cannot
  score gets its own status (404 unknown user, 422 unreadable features) and the single
  route's message; the other rows are scored. Scored rows are logged like single answers.
- **Hot swap.** A watcher thread calls the service's ``load`` every ``poll_seconds``; when an
  alias points at a new version it is loaded *beside* the current one and a reference swapped.
  A request reads that reference once, so requests in flight finish on the model they
  started with and none fail during a swap.
- **Prediction log.** Every answer is put on an in-memory queue (no I/O on the request path)
  and a background thread appends it to ``<data_dir>/predictions/serving/date=.../*.jsonl``
  for monitoring (`ml.serving.prediction_log`). Shutdown drains the queue.
- **Errors.** Bad input is a 4xx with a message (NaN and infinity rejected, unknown feature
  names listed, unknown users answered with 404); only a bug could give a 500. Every error
  body is an `ErrorResponse`, as the OpenAPI schema declares, and never echoes the input
  wholesale: at most `MAX_ERRORS` problems, each cut to a few hundred characters.
- **Bounded input.** A body over ``LOOPLINE_API_MAX_BODY_BYTES`` is answered 413 before it is
  read or parsed (`_BodyLimit`); string values are at most `MAX_STRING_CHARS` characters,
  numbers finite and within the float range, ids within 64 bits, at most `MAX_FEATURES` keys.
- **Access.** `ml.serving.auth`: ``LOOPLINE_API_TOKEN`` guards what reveals internals (the
  details of ``/readyz``) and, with ``LOOPLINE_API_TOKEN_REQUIRED_FOR_READS``, scoring too.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from loopline.api_docs import offline_docs
from loopline.push.webhook import INGEST_PATH
from loopline.push.webhook import router as ingest_router
from loopline.settings import Settings
from ml.features.definitions import CHURN, USER_HISTORY
from ml.features.online import open_online_store
from ml.features.online.base import FeatureVector, OnlineStore
from ml.recommender.model import parse_history
from ml.registry import CHAMPION, CHURN_MODEL, RECS_MODEL
from ml.serving.auth import bearer, require_token, token_ok
from ml.serving.models import LoadedChurn, ModelService, RegistryModelService, Watcher
from ml.serving.prediction_log import PredictionLog

log = logging.getLogger("loopline.serve")

MAX_STRING_CHARS = 1024  # a feature's string value (categories are short words)
MAX_FEATURES = 512  # keys in one `features` object (a model reads a few dozen)
MAX_ID = 2**53 - 1  # the largest integer every JSON client carries exactly (ids are int64)
MAX_ERRORS = 20  # problems listed in one 422
MAX_MESSAGE_CHARS = 300  # characters of one problem (or one offending name) echoed back
MAX_FLOAT = sys.float_info.max
# the schema's bound as JSON writes it (1.7976931348623157e308): an integer between it and the
# float's exact value is within the float but outside the schema, so it is refused too (found
# by the fuzzing of the batch route, where an unscorable row is not a 4xx of the request)
MAX_INT_VALUE = int(Decimal(repr(MAX_FLOAT)))


def _feature_value(value: object) -> float | int | str | bool | None:
    """A feature value as JSON gives it, refused (with a short reason) if it could not score."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT_VALUE:  # float() of more would raise OverflowError
            raise ValueError(f"a number must be finite and within ±{MAX_FLOAT:.4g}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not allowed: NaN and infinity are not numbers here")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise ValueError(f"a string value is at most {MAX_STRING_CHARS} characters")
        return value
    raise ValueError("a feature value is a number, a string, a boolean or null")


# one validator (not a union) so a bad value gets one clear problem, not one per member
FeatureValue = Annotated[
    Any,
    PlainValidator(_feature_value),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": -MAX_FLOAT, "maximum": MAX_FLOAT},
                {"type": "string", "maxLength": MAX_STRING_CHARS},
                {"type": "boolean"},
                {"type": "null"},
            ]
        }
    ),
]


def _cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut to `limit` characters (and saying so)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------------------------
# request and response bodies


class ChurnRequest(BaseModel):
    """Score one user: by `user_id` (features from the online store) or with `features`."""

    # the schema says "exactly one" too, so clients and fuzzers know {} is not a request
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["user_id"], "properties": {"user_id": {"type": "integer"}}},
                {"required": ["features"], "properties": {"features": {"type": "object"}}},
            ]
        },
    )

    user_id: int | None = Field(None, ge=0, le=MAX_ID)
    features: dict[str, FeatureValue] | None = Field(None, max_length=MAX_FEATURES)

    @field_validator("user_id", mode="before")
    @classmethod
    def _not_a_bool(cls, value: object) -> object:
        # pydantic would read true as user 1 (found by the fuzzing)
        if isinstance(value, bool):
            raise ValueError("user_id is an integer, not a boolean")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ChurnRequest:
        if (self.user_id is None) == (self.features is None):
            raise ValueError("give exactly one of user_id or features")
        return self


class Problem(BaseModel):
    where: str = Field(description="where in the request, e.g. body.features.minutes")
    problem: str


class ErrorResponse(BaseModel):
    """Every 4xx and 503 body: what is wrong, and for invalid requests the first problems."""

    detail: str
    errors: list[Problem] | None = Field(
        None, description=f"the first {MAX_ERRORS} problems of an invalid request"
    )
    errors_total: int | None = Field(None, description="how many problems there were")


class ReadyResponse(BaseModel):
    """``/readyz``: the served versions and the last refresh error, when allowed to see them."""

    ready: bool
    churn_model: str | None = None
    recommender: str | None = None
    alias: str | None = None
    last_refresh_error: str | None = None


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def _body_of(model: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its body by hand (`parse_body`)."""
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class ModelRef(BaseModel):
    name: str
    version: str


class ChurnResponse(BaseModel):
    user_id: int | None
    churn_probability: float
    is_high_risk: bool
    threshold: float
    model: ModelRef
    feature_set_version: str | None
    feature_timestamp: datetime | None
    features_from: str
    imputed: list[str]


class ChurnBatchRequest(BaseModel):
    """Score many users at once: each row as the single route takes it, in any mix."""

    model_config = ConfigDict(extra="forbid")

    rows: list[ChurnRequest] = Field(
        min_length=1,
        description="at most LOOPLINE_API_MAX_BATCH_ROWS (default 1000) rows; each a "
        "`user_id` or a `features` object",
    )


class ChurnBatchResult(BaseModel):
    """One row's answer: a score (status 200), or why this row was not scored."""

    status: int = Field(
        description="200 scored; 404 no features in the online store for this user; 422 "
        "features this model cannot read (the status the single route would answer)"
    )
    user_id: int | None
    churn_probability: float | None = None
    is_high_risk: bool | None = None
    feature_set_version: str | None = None
    feature_timestamp: datetime | None = None
    features_from: str
    imputed: list[str] | None = None
    error: str | None = Field(None, description="why the row was not scored (status 404/422)")


class ChurnBatchResponse(BaseModel):
    """A result per row, in the order of the request, all from one model version."""

    model: ModelRef
    threshold: float
    rows: int
    scored: int
    results: list[ChurnBatchResult]


class Recommendation(BaseModel):
    rank: int
    show_id: str
    score: float


class RecommendationsResponse(BaseModel):
    user_id: int
    k: int
    just_watched: str | None
    user_known: bool
    strategy: str
    model: ModelRef
    recommendations: list[Recommendation]


# --------------------------------------------------------------------------------------------
# the churn routes' request parsing and answers, without pydantic on the way out

Body = TypeVar("Body", bound=BaseModel)
_TIMESTAMP = TypeAdapter(datetime)  # the RFC 3339 form pydantic gives the response models
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_UNKNOWN_USER = (
    "user {} has no features in the online store (unknown, or not subscribed); "
    "send features in the body to score anyway"
)


def parse_body(model: type[Body], body: bytes) -> Body:
    """`body` parsed and validated in one pass (pydantic's JSON parser), or the 422 FastAPI
    would give for a body parameter of type `model`."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _json_response(body: dict[str, Any]) -> Response:
    return Response(_ENCODE(body), media_type="application/json")


def features_problem(features: dict[str, Any], churn: LoadedChurn) -> str | None:
    """Why this model cannot score `features` (a 422 message), or None if it can."""
    columns = churn.champion.feature_columns
    unknown = sorted(set(features) - set(columns))
    if unknown:
        named = ", ".join(repr(_cut(name, 64)) for name in unknown[:MAX_ERRORS])
        more = f" and {len(unknown) - MAX_ERRORS} more" if len(unknown) > MAX_ERRORS else ""
        return f"unknown feature(s) {named}{more}; this model reads {columns}"
    for name in churn.champion.numeric_columns:
        value = features.get(name)
        if isinstance(value, (str, bool)):
            return f"feature {name!r} must be a number, got {_cut(repr(value), 64)}"
    return None


def _stored(vector: FeatureVector) -> dict[str, Any]:
    """What an answer says about a stored vector: its version and time (RFC 3339, UTC)."""
    stamp = vector.feature_timestamp
    if stamp is not None and stamp.tzinfo is None:
        # the warehouse keeps UTC without an offset; RFC 3339 (and the schema) want one
        stamp = stamp.replace(tzinfo=UTC)
    return {
        "feature_set_version": vector.feature_set_version,
        "feature_timestamp": None if stamp is None else _TIMESTAMP.dump_python(stamp, mode="json"),
    }


def _imputed(churn: LoadedChurn, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Where an answer's features came from, and which of them the model had to impute."""
    imputed = [c for c in churn.champion.feature_columns if values.get(c) is None]
    return {"features_from": source, "imputed": imputed}


def _log_record(
    churn: LoadedChurn, user_id: int | None, probability: float, source: str, values: dict
) -> dict[str, Any]:
    champion = churn.champion
    return {
        "logged_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "endpoint": "churn",
        "model_name": champion.name,
        "model_version": champion.version,
        "user_id": user_id,
        "churn_probability": probability,
        "features_from": source,
        "features": {c: values.get(c) for c in champion.feature_columns},
    }


# --------------------------------------------------------------------------------------------
# the app


def create_app(
    settings: Settings,
    alias: str = CHAMPION,
    poll_seconds: float = 5.0,
    store: OnlineStore | None = None,
    models: ModelService | None = None,
) -> FastAPI:
    """The serving app; models load at start-up and are reloaded every `poll_seconds`.

    ``models`` defaults to a `RegistryModelService` following `alias` in the MLflow registry;
    pass another `ModelService` (e.g. models fitted in a test) to serve without a registry.
    """
    state: dict[str, Any] = {}
    prediction_log = {
        "max_file_bytes": settings.prediction_log_max_file_bytes,
        "keep_files": settings.prediction_log_keep_files,
        "keep_days": settings.prediction_log_keep_days,
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1)  # one request, one thread: no OpenMP start-up per call
        # background threads (registry watcher, prediction log) hand the GIL back within
        # 0.2 ms instead of Python's default 5 ms, which otherwise lands in the p99
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)
        service = models or RegistryModelService(settings, alias)
        service.load()
        watcher = Watcher(service, poll_seconds)
        watcher.start()
        state["models"] = service
        state["store"] = store or open_online_store(settings)
        state["log"] = PredictionLog(
            settings.data_dir / "predictions" / "serving", **prediction_log
        )
        try:
            yield
        finally:
            watcher.stopped.set()
            state["log"].close()
            if store is None:
                state["store"].close()
            limits.restore_original_limits()
            sys.setswitchinterval(switch_interval)

    app = FastAPI(
        title="loopline serving",
        version="1",
        lifespan=lifespan,
        description="Churn scores and what-to-watch-next recommendations from @champion.",
        docs_url=None,  # offline_docs serves /docs without a CDN
        redoc_url=None,
    )
    offline_docs(app)
    # the push webhook (POST /v1/ingest/events): lands NDJSON for the line; its own bearer
    # token (LOOPLINE_INGEST_TOKEN) and body limit (LOOPLINE_INGEST_MAX_BYTES)
    app.include_router(ingest_router)

    app.state.settings = settings  # for `ml.serving.auth` and routers mounted later

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # never the input itself: the first problems, each cut short (a 13 MB body of
        # unknown keys once came back as a 7.6 MB answer)
        found = exc.errors()
        errors = [
            {
                "where": _cut(".".join(str(p) for p in e.get("loc", ()))),
                "problem": _cut(str(e.get("msg", ""))),
            }
            for e in found[:MAX_ERRORS]
        ]
        body = {"detail": "invalid request", "errors": errors, "errors_total": len(found)}
        return JSONResponse(status_code=422, content=body)

    def _churn() -> LoadedChurn:
        models: ModelService = state["models"]
        loaded = models.churn
        if loaded is None:
            raise HTTPException(503, f"no {CHURN_MODEL}@{alias} yet: run `loopline train`")
        return loaded

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the churn model is loaded. Says which versions are served and the last
        refresh error, to callers with the token when ``LOOPLINE_API_TOKEN`` is set."""
        models: ModelService = state["models"]
        body: dict[str, Any] = {"ready": models.churn is not None}
        # read by hand, not as a security dependency: the endpoint itself stays open
        if token_ok(settings, bearer(request.headers.get("authorization"))):
            body |= {**models.versions(), "alias": alias, "last_refresh_error": models.last_error}
        return JSONResponse(status_code=200 if models.churn else 503, content=body)

    # declared only when required, so the OpenAPI schema says what this app really asks for
    reads = [Depends(require_token)] if settings.api_token_required_for_reads else []

    @app.post(
        "/v1/churn/score",
        response_model=ChurnResponse,
        dependencies=reads,
        responses=_errors(400, 401, 404, 413, 422, 503),
        openapi_extra=_body_of("ChurnRequest"),
    )
    async def churn_score(http: Request) -> Response:
        """The churn probability of one user, from the online store or the given features."""
        # the body is parsed by hand (one pydantic pass over the bytes) and the answer
        # encoded by hand: FastAPI's parameter and response-model machinery cost more than
        # the lookup and the model together (bench/RESULTS.md, row 0)
        request = parse_body(ChurnRequest, await http.body())
        loaded = _churn()
        champion = loaded.champion
        stored: dict[str, Any] = {"feature_set_version": None, "feature_timestamp": None}
        if request.features is not None:
            problem = features_problem(request.features, loaded)
            if problem:
                raise HTTPException(422, problem)
            values: dict[str, Any] = request.features
            source = "request"
        else:
            # the vector of the feature-set version this model was trained on
            vector = state["store"].get_one(
                CHURN.name, request.user_id, champion.feature_set_version or None
            )
            if vector is None:
                raise HTTPException(404, _UNKNOWN_USER.format(request.user_id))
            values = vector.values
            source = "online_store"
            stored = _stored(vector)
        probability = loaded.score(values)
        answer = {
            "user_id": request.user_id,
            "churn_probability": probability,
            "is_high_risk": probability >= champion.threshold,
            "threshold": champion.threshold,
            "model": {"name": champion.name, "version": champion.version},
            **stored,
            **_imputed(loaded, values, source),
        }
        state["log"].put(_log_record(loaded, request.user_id, probability, source, values))
        return _json_response(answer)

    @app.post(
        "/v1/churn/score/batch",
        response_model=ChurnBatchResponse,
        dependencies=reads,
        responses=_errors(400, 401, 413, 422, 503),
    )
    async def churn_score_batch(request: ChurnBatchRequest) -> Response:
        """The churn probability of up to LOOPLINE_API_MAX_BATCH_ROWS users in one request.

        One model version scores every row (one store lookup for all the ids, one model
        call for all the rows). A row that cannot be scored gets its own status and error
        (404: no features for that user; 422: features this model cannot read) and the
        others are scored; a malformed body or too many rows is a 422 for the request."""
        if len(request.rows) > settings.api_max_batch_rows:
            raise HTTPException(
                422,
                f"{len(request.rows)} rows in one request; at most "
                f"{settings.api_max_batch_rows} (LOOPLINE_API_MAX_BATCH_ROWS): split the batch",
            )
        loaded = _churn()
        champion = loaded.champion
        ids = [row.user_id for row in request.rows if row.user_id is not None]
        stored = iter(
            state["store"].get(CHURN.name, ids, champion.feature_set_version or None) if ids else []
        )
        results: list[dict[str, Any]] = []
        scorable: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (result, values)
        for row in request.rows:
            result: dict[str, Any] = dict.fromkeys(ChurnBatchResult.model_fields)
            result |= {"status": 200, "user_id": row.user_id}
            if row.features is not None:
                problem = features_problem(row.features, loaded)
                result["features_from"] = "request"
                if problem:
                    result |= {"status": 422, "error": problem}
                else:
                    scorable.append((result, row.features))
            else:
                vector = next(stored)
                result["features_from"] = "online_store"
                if vector is None:
                    result |= {"status": 404, "error": _UNKNOWN_USER.format(row.user_id)}
                else:
                    result |= _stored(vector)
                    scorable.append((result, vector.values))
            results.append(result)
        probabilities = loaded.score_many([values for _, values in scorable])
        for (result, values), p in zip(scorable, probabilities.tolist(), strict=True):
            result |= {"churn_probability": p, "is_high_risk": p >= champion.threshold}
            result |= _imputed(loaded, values, result["features_from"])
            state["log"].put(
                _log_record(loaded, result["user_id"], p, result["features_from"], values)
            )
        return _json_response(
            {
                "model": {"name": champion.name, "version": champion.version},
                "threshold": champion.threshold,
                "rows": len(results),
                "scored": len(scorable),
                "results": results,
            }
        )

    @app.get(
        "/v1/recommendations/{user_id}",
        response_model=RecommendationsResponse,
        dependencies=reads,
        responses=_errors(401, 404, 422, 503),
    )
    async def recommendations(
        user_id: Annotated[int, PathParam(ge=0, le=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
        just_watched: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> RecommendationsResponse:
        """What to watch next: the user's history, boosted by the show just finished."""
        models: ModelService = state["models"]
        loaded = models.recommender
        if loaded is None:
            raise HTTPException(503, f"no {RECS_MODEL}@{alias} yet: run `loopline train`")
        if just_watched is not None and not loaded.model.knows(just_watched):
            raise HTTPException(
                404, f"show {just_watched!r} is not in the catalogue the model knows"
            )
        # the line flow materialises these histories, in the version the model was tagged with
        vector = state["store"].get_one(USER_HISTORY.name, str(user_id), loaded.history_version)
        history: list[str] = []
        if vector is not None:
            history = parse_history(vector.values.get("recent_shows"))
        ranked = loaded.model.recommend(history, k, just_watched=just_watched)
        strategy = "item-item" if history or just_watched else "popularity"
        response = RecommendationsResponse(
            user_id=user_id,
            k=k,
            just_watched=just_watched,
            user_known=vector is not None,
            strategy=strategy,
            model=ModelRef(name=RECS_MODEL, version=loaded.version),
            recommendations=[
                Recommendation(rank=i + 1, show_id=show, score=float(score))
                for i, (show, score) in enumerate(ranked)
            ],
        )
        state["log"].put(
            {
                "logged_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
                "endpoint": "recommendations",
                "model_name": RECS_MODEL,
                "model_version": loaded.version,
                "user_id": user_id,
                "just_watched": just_watched,
                "shows": [show for show, _ in ranked],
            }
        )
        return response

    app.state.loopline = state
    app.add_middleware(_BodyLimit, max_bytes=settings.api_max_body_bytes, own_limits=(INGEST_PATH,))
    app.add_middleware(_ModelVersionHeaders, state=state)  # outermost: on every answer
    return app


class _BodyLimit:
    """Answers 413 to a request body over `max_bytes` before the app reads or parses it.

    A declared ``Content-Length`` over the limit is refused without reading a byte; a body
    sent without one (chunked) is read here up to the limit, then handed on whole. Either way
    the event loop never parses more than `max_bytes`.
    """

    def __init__(self, app: Any, max_bytes: int, own_limits: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own_limits = own_limits  # paths that read their body under a limit of their own

    async def _refuse(self, send: Any, status: int, detail: str) -> None:
        body = JSONResponse(status_code=status, content={"detail": detail}).body
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in self.own_limits
        ):
            await self.app(scope, receive, send)
            return
        too_big = (
            f"request body over {self.max_bytes} bytes (LOOPLINE_API_MAX_BODY_BYTES); "
            "send fewer rows, or raise the limit"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send, 413, too_big)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """A `receive` that gives `messages` first, then whatever the client sends next."""

    async def replayed() -> dict[str, Any]:
        return messages.pop(0) if messages else await receive()

    return replayed


class _ModelVersionHeaders:
    """Adds the served versions as headers to every response, errors included.

    A plain ASGI middleware (a few microseconds), not `BaseHTTPMiddleware`, which would
    add a task and a stream per request on the hot path.
    """

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_versions(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                models: ModelService | None = self.state.get("models")
                churn = models.churn.champion.version if models and models.churn else "none"
                recs = models.recommender.version if models and models.recommender else "none"
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-churn-model-version", churn.encode()),
                    (b"x-recommender-version", recs.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_versions)


def serve(
    settings: Settings, host: str, port: int, alias: str = CHAMPION, poll_seconds: float = 5.0
) -> None:
    """Run the app on uvicorn in this process until interrupted."""
    import uvicorn

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not is_loopback(host) and not settings.api_token:
        log.warning(
            "serving on %s, reachable from other machines, with no LOOPLINE_API_TOKEN: "
            "anyone who reaches it can read scores and the served versions",
            host,
        )
    app = create_app(settings, alias=alias, poll_seconds=poll_seconds)
    started = time.monotonic()
    log.info("serving on http://%s:%s", host, port)
    uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level="info")
    log.info("stopped after %.0f s", time.monotonic() - started)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the API on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
