"""`app.py serve`: the HTTP API (FastAPI) and the clinician page, over one warm :class:`Engine`.

Endpoints: ``POST /v1/query`` (the answer JSON of ``app.py query --json``; with ``"stream": true``
server-sent events: the unchecked draft token by token, then the checked answer), ``GET
/v1/index/status``, ``GET /v1/info``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, and
the page at ``/``. Every error is JSON ``{"error": "one line", "status": N}``, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.answer import Answer
from rag.assistant import Prepared
from rag.config import AppConfig, ServeConfig
from rag.errors import CDSError, InputError
from rag.status import index_status
from serve.engine import Busy, Engine, NotReady
from serve.metrics import resident_bytes

log = logging.getLogger("serve")

NOTICE = ("Not a medical device: research and demonstration software. It does not give medical advice and has not "
          "been validated for clinical use. Verify every answer against the cited guideline and the patient's record.")
DRAFT_NOTICE = "unchecked draft: citations and support are checked when it is complete; the checked answer follows"
MIN_KEY_CHARS = 16
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., description="the clinical question", examples=["What reduces mortality in HFrEF?"])
    patient_id: str | None = Field(None, description="scope to this patient's records (e.g. P002)")
    top_k: int | None = Field(None, ge=1, le=50, description="sources to retrieve (default: retrieval.top_k)")
    generate: bool = Field(True, description="false: evidence only, no generated answer")
    stream: bool = Field(False, description="server-sent events: `draft` tokens (unchecked), then `answer`")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message), "status": status}, status_code=status, headers=headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key(cfg: ServeConfig, environ: dict[str, str] | None = None) -> str | None:
    """The API key from the environment; refuse (InputError) to bind beyond loopback without one."""
    env = os.environ if environ is None else environ
    key = env.get(cfg.api_key_env) or None
    if key is not None and len(key) < MIN_KEY_CHARS:
        raise InputError(f"{cfg.api_key_env} is shorter than {MIN_KEY_CHARS} characters; use a long random key, e.g. "
                         f"`export {cfg.api_key_env}=$(python -c 'import secrets; print(secrets.token_urlsafe())')`")
    if key is None and not is_loopback(cfg.host):
        raise InputError(f"binding {cfg.host} (not loopback) needs an API key: set {cfg.api_key_env} in the "
                         "environment, or bind 127.0.0.1")
    return key


def _static_dir() -> Path:
    return Path(str(resources.files("serve") / "static"))


def create_app(config: AppConfig, engine: Engine | None = None, key: str | None = None, start: bool = True) -> FastAPI:
    """The FastAPI app. ``engine`` may be injected (tests pass one with fake models)."""
    eng = engine if engine is not None else Engine(config)
    cfg = config.serve
    calibrated = bool(config.confidence.calibration) and config.confidence.calibrated_answers

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start:
            eng.start()
        log.info("serving", extra={"event": "start", "host": cfg.host, "port": cfg.port, "auth": key is not None})
        yield
        eng.stop()

    app = FastAPI(title="CDS Assistant", version="0.1.0", lifespan=lifespan,
                  description="Cited answers from clinical guidelines and patient records, with a calibrated "
                              "confidence, or an abstention. " + NOTICE)
    app.state.engine = eng

    # -- errors: JSON on one line, never a traceback ---------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.error("unexpected failure", extra={"event": "error", "error_type": type(e).__name__})
        return _error(500, f"internal error ({type(e).__name__}); the server log has its type")

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(rid):  # a client's id is logged only when it cannot carry text
            rid = uuid.uuid4().hex[:16]
        request.state.request_id = rid
        t = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            response: Response = _error(413, f"request body over {cfg.max_body_bytes} bytes (serve.max_body_bytes)")
        else:
            try:
                response = await call_next(request)
            except Exception as e:  # an error past the handlers (e.g. in a middleware)
                log.error("unexpected failure", extra={"event": "error", "error_type": type(e).__name__})
                response = _error(500, f"internal error ({type(e).__name__}); the server log has its type")
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        eng.metrics.inc("cds_requests_total", route=name, status=str(response.status_code))
        response.headers["x-request-id"] = rid
        log.info("request", extra={"event": "request", "request_id": rid, "method": request.method, "route": name,
                                   "status": response.status_code, "ms": round((time.perf_counter() - t) * 1000, 1)})
        return response

    def authorize(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY`",
                           {"WWW-Authenticate": "Bearer"})

    # -- health -----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], summary="the process is up")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "uptime_s": round(time.time() - eng.started, 1)}

    @app.get("/readyz", tags=["health"], summary="models and index loaded: questions are answered")
    async def readyz() -> JSONResponse:
        if eng.ready:
            assert eng.assistant is not None
            return JSONResponse({"ready": True, "index_version": eng.assistant.index.version,
                                 "admission": eng.admission()})
        reason = eng.load_error or ("shutting down" if eng.stopping else "loading the models")
        return JSONResponse({"ready": False, "reason": _one_line(reason)}, status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus text format", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        authorize(request)
        eng.metrics.set_gauge("cds_ready", 1.0 if eng.ready else 0.0)
        eng.metrics.set_gauge("cds_process_resident_bytes", resident_bytes())
        adm = eng.admission()
        eng.metrics.set_gauge("cds_admission_expected_wait_seconds", adm["expected_wait_s"])
        for size, seconds in adm["batch_seconds"].items():
            eng.metrics.set_gauge("cds_generation_batch_seconds_mean", seconds, size=size)
        if eng.ready and eng.assistant is not None:
            eng.metrics.set_gauge("cds_index_info", 1.0, version=eng.assistant.index.version)
        return PlainTextResponse(eng.metrics.render(), media_type="text/plain; version=0.0.4")

    # -- the API ----------------------------------------------------------------------------------
    @app.get("/v1/info", tags=["query"], summary="what the page needs before asking (no key needed)")
    async def info() -> dict[str, Any]:
        return {"name": "CDS Assistant", "auth_required": key is not None, "notice": NOTICE,
                "draft_notice": DRAFT_NOTICE, "confidence_is_probability": calibrated,
                "max_question_chars": config.query.max_question_chars,
                "labels": {"high": config.confidence.high, "medium": config.confidence.medium},
                "ready": eng.ready}

    @app.get("/v1/index/status", tags=["index"], summary="the index being served (as `app.py index status --json`)")
    async def status(request: Request) -> dict[str, Any]:
        authorize(request)
        a = _ready(eng)
        st = await asyncio.get_running_loop().run_in_executor(eng.pool, index_status, a.index_root)
        st["serving_version"] = a.index.version
        return st

    @app.post("/v1/query", tags=["query"], summary="answer a question with cited sources, or abstain",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": QueryRequest.model_json_schema()}}}},
              responses={200: {"description": "the Answer JSON (`app.py query --json`), or server-sent events "
                                              "when stream is true"},
                         400: {"description": "bad input"}, 401: {"description": "API key"},
                         413: {"description": "body too large"}, 422: {"description": "invalid fields"},
                         429: {"description": "queue full, or the generator queue would outlast the timeout "
                                              "(Retry-After: seconds)"},
                         503: {"description": "not ready"},
                         504: {"description": "timed out"}})
    async def query(request: Request) -> Response:
        authorize(request)
        req = await _read_query(request, cfg.max_body_bytes)
        _ready(eng)
        rid = request.state.request_id
        if len(req.question) > 4 * config.query.max_question_chars:  # cheap bound before any cleaning
            raise ApiError(400, f"the question is over {config.query.max_question_chars} characters; shorten it")
        try:
            eng.admit()
        except Busy as e:
            raise ApiError(429, str(e), {"Retry-After": str(e.retry_after_s)}) from None
        meta = {"request_id": rid, "question_chars": len(req.question), "patient": req.patient_id is not None,
                "stream": req.stream}
        if req.stream:
            ticket = _Ticket(eng)  # released when the stream ends, or after the response if it never started
            return StreamingResponse(_stream(eng, req, meta, config, ticket), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                     background=BackgroundTask(ticket.release))
        try:
            answer = await asyncio.wait_for(_answer(eng, req), cfg.request_timeout_s)
        except TimeoutError:
            eng.metrics.inc("cds_rejected_total", reason="timeout")
            raise ApiError(504, f"no answer within {cfg.request_timeout_s:g} s (serve.request_timeout_s); retry "
                                "later") from None
        except Busy as e:  # admission control: the answer would come after the timeout
            raise ApiError(429, str(e), {"Retry-After": str(e.retry_after_s)}) from None
        except (CDSError, NotReady) as e:
            raise _as_api_error(e, eng) from None
        finally:
            eng.release()
        _log_answer(eng, answer, meta)
        return JSONResponse(answer.to_dict())

    static = _static_dir()
    if static.is_dir():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

        @app.get("/", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(static / "index.html", media_type="text/html")

    return app


def _ready(eng: Engine) -> Any:
    try:
        return eng.require_ready()
    except NotReady as e:
        raise ApiError(503, str(e), {"Retry-After": "10"}) from None


def _as_api_error(e: Exception, eng: Engine) -> ApiError:
    if isinstance(e, NotReady):
        return ApiError(503, str(e), {"Retry-After": "10"})
    if isinstance(e, InputError):
        eng.metrics.inc("cds_rejected_total", reason="input")
        return ApiError(400, str(e))
    assert isinstance(e, CDSError)
    return ApiError(500, str(e))


def _validation_message(errors: Any) -> str:
    if not errors:
        return "invalid request"
    e = errors[0]
    where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
    return f"{where}: {e.get('msg', 'invalid')}; see /docs for the request schema"


async def _read_query(request: Request, limit: int) -> QueryRequest:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body over {limit} bytes (serve.max_body_bytes)")
    try:
        data = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, 'the body is not valid JSON; send {"question": "...", "patient_id": null}') from None
    if not isinstance(data, dict):
        raise ApiError(400, 'the body must be a JSON object like {"question": "..."}')
    try:
        return QueryRequest.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, _validation_message(e.errors())) from None


async def _answer(eng: Engine, req: QueryRequest, on_text: Callable[[str], None] | None = None,
                  on_prepared: Callable[[Prepared], None] | None = None) -> Answer:
    """Retrieve in the pool, generate in the worker, check in the pool."""
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    step = await loop.run_in_executor(eng.pool, eng.prepare, req.question, req.patient_id, req.top_k, req.generate)
    if isinstance(step, Answer):
        eng.metrics.observe("cds_request_seconds", time.perf_counter() - t)
        return step
    prepared: Prepared | None = step
    while prepared is not None:  # the first try, then (generator.second_try) at most one more
        fut = eng.generate(prepared, on_text, time.perf_counter() - t)  # Overloaded (429) when it would time out
        if on_prepared is not None and prepared is step:
            on_prepared(step)  # after the queue took it (its draft tokens reach the loop after this event)
        try:
            out = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:  # timed out (504) or the client left: stop generating for it
            eng.abandon(fut)
            raise
        answer = await loop.run_in_executor(eng.pool, eng.finish, prepared, out)
        prepared = await loop.run_in_executor(eng.pool, eng.second_try, prepared, answer)
    eng.metrics.observe("cds_request_seconds", time.perf_counter() - t)
    return answer


def _log_answer(eng: Engine, answer: Answer, meta: dict[str, Any]) -> None:
    outcome = "abstained" if answer.abstained else ("answered" if answer.generated else "evidence")
    eng.metrics.inc("cds_answers_total", outcome=outcome)
    log.info("answer", extra={"event": "answer", **meta, "abstained": answer.abstained,
                              "generated": answer.generated, "confidence": round(answer.confidence, 3),
                              "confidence_label": answer.confidence_label, "index_version": answer.index_version,
                              "ms": round(answer.timings_ms.get("total", 0.0), 1)})


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class GenerationStopped(Exception):
    """Raised inside a streamed generation whose client has gone, to free the generator at once."""


class _Ticket:
    """One admitted question: released exactly once, whichever way its response ends."""

    def __init__(self, eng: Engine):
        self._eng = eng
        self._done = False

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._eng.release()


async def _stream(eng: Engine, req: QueryRequest, meta: dict[str, Any], config: AppConfig, ticket: _Ticket
                  ) -> AsyncIterator[bytes]:
    """Server-sent events: ``sources`` (what is being read), ``draft`` (unchecked tokens), then ``answer``
    (the checked answer JSON) or ``error``; the draft is never the answer."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    t0 = time.perf_counter()
    first: list[float] = []

    gone = threading.Event()  # the client left (or the request timed out): stop generating for it

    def on_text(text: str) -> None:  # called in the generation thread
        if gone.is_set():
            raise GenerationStopped("the client went away")
        if not first:
            first.append(time.perf_counter())
        loop.call_soon_threadsafe(events.put_nowait, ("draft", {"text": text, "unchecked": True}))

    def on_prepared(p: Prepared) -> None:
        events.put_nowait(("sources", {"unchecked": True, "notice": DRAFT_NOTICE,
                                       "sources": [{"n": n, "title": u.chunk.title, "section": u.chunk.section}
                                                   for n, u in enumerate(p.units, start=1)]}))

    task = asyncio.ensure_future(asyncio.wait_for(_answer(eng, req, on_text, on_prepared),
                                                  config.serve.request_timeout_s))
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                name, data = getter.result()
                yield _sse(name, data)
                continue
            getter.cancel()
            while not events.empty():
                name, data = events.get_nowait()
                yield _sse(name, data)
            break
        try:
            answer = task.result()
        except TimeoutError:
            eng.metrics.inc("cds_rejected_total", reason="timeout")
            yield _sse("error", {"error": f"no answer within {config.serve.request_timeout_s:g} s", "status": 504})
            return
        except Busy as e:  # after the 200 headers: the status and Retry-After go in the event
            yield _sse("error", {"error": _one_line(str(e)), "status": 429, "retry_after_s": e.retry_after_s})
            return
        except (CDSError, NotReady) as e:
            err = _as_api_error(e, eng)
            yield _sse("error", {"error": _one_line(err.message), "status": err.status})
            return
        except Exception as e:
            log.error("unexpected failure", extra={"event": "error", "error_type": type(e).__name__,
                                                   "request_id": meta["request_id"]})
            yield _sse("error", {"error": f"internal error ({type(e).__name__})", "status": 500})
            return
        if first:
            eng.metrics.observe("cds_first_token_seconds", first[0] - t0)
        _log_answer(eng, answer, meta)
        yield _sse("answer", answer.to_dict())
    finally:
        gone.set()
        if not task.done():
            task.cancel()
        ticket.release()


def run(config: AppConfig, key: str | None) -> None:
    """Serve until interrupted (uvicorn, one process: the models are loaded once)."""
    import uvicorn

    app = create_app(config, key=key)
    uvicorn.run(app, host=config.serve.host, port=config.serve.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
