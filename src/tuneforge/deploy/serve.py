"""`tuneforge serve`: a FastAPI app on uvicorn, micro-batching concurrent requests into one model call.

    tuneforge serve runs/my-run                          # http://127.0.0.1:8000, no key
    TUNEFORGE_API_KEY=secret tuneforge serve runs/my-run/export/onnx-int8 --port 9000

Routes: GET /health (never needs the key), GET /v1/model, GET /v1/stats, and the task's own route:
POST /v1/classify, /v1/summarize or /v1/generate, each taking one input or a list. OpenAPI at /openapi.json.
Limits: request body (413), inputs per request and tokens per input (422, or truncation with --truncate),
max_new_tokens capped by --max-new-tokens. With an API key every route but /health answers 401 without
`Authorization: Bearer KEY` (or `X-API-Key: KEY`). Inference goes through `tuneforge.load(...)`'s model.

/openapi.json is the contract: the task declares its route and per-run request/response models
(`Task.serve_schema`, deploy/schemas.py), every status the server answers is documented with its body, and
every 422 has FastAPI's error shape. schemathesis checks it (schemathesis.toml, tests/test_serve_contract.py).
"""

import hmac
import ipaddress
import json
import logging
import os
import socket
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from tuneforge.errors import UserError

API_KEY_ENV = "TUNEFORGE_API_KEY"
log = logging.getLogger("tuneforge.serve")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch_size: int = 16  # inputs per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_body_bytes: int = 1 << 20
    max_inputs: int = 64  # inputs per request
    max_input_tokens: int | None = None  # default: what the model accepts
    truncate: bool = False  # cut long inputs instead of answering 422
    max_new_tokens: int = 256  # cap for summarize/generate

    def check(self) -> None:
        for name in ("max_batch_size", "max_body_bytes", "max_inputs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise UserError(f"--max-wait-ms: must not be negative, got {self.max_wait_ms}")
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise UserError(f"--max-input-tokens: must be at least 1, got {self.max_input_tokens}")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port: {self.port} is not a port number")


def _send_json(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    data = json.dumps(body).encode()

    async def send_to(send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": data})
    return send_to


class ApiKeyMiddleware:
    """401 on every path but /health without the key (Authorization: Bearer KEY, or X-API-Key: KEY)."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key", b"")
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
            if not hmac.compare_digest(given, self.key):
                await _send_json(401, {"detail": "missing or wrong API key: send 'Authorization: Bearer KEY'"},
                                 [(b"www-authenticate", b"Bearer")])(send)
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 when a request body is larger than the limit (declared length, or bytes actually sent)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_big = _send_json(413, {"detail": f"request body larger than {self.max_bytes} bytes (server limit "
                                             "--max-body-bytes); send fewer or shorter inputs"})
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await too_big(send)
                return
        body, sent = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _validation_error(errors: list[dict[str, Any]]) -> Any:
    """A 422 in FastAPI's own shape ({"detail": [{"type", "loc", "msg", ...}]}), as the document declares."""
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError(errors)


def _security(app: Any) -> None:
    """Declare the API key in /openapi.json: a bearer token or the X-API-Key header, on every route but /health."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI keeps it in app.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for path, operations in schema["paths"].items():
                if path != "/health":
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return app.openapi_schema

    app.openapi = openapi


def create_app(loaded: Any, settings: ServeSettings) -> Any:
    """The FastAPI app serving `loaded` (a tuneforge LoadedModel). Its /openapi.json is the contract: the
    route, request and response models come from the task (`Task.serve_schema`), every error status is
    documented with its body, and every 422 has FastAPI's error shape."""
    from fastapi import FastAPI
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from tuneforge.deploy.batcher import MicroBatcher
    from tuneforge.deploy.schemas import ErrorMessage, Health, ModelInfo, ServeContext, Stats
    from tuneforge.version import __version__

    settings.check()
    context = loaded.context_length()
    token_limit = min(settings.max_input_tokens or context, context)
    ctx = ServeContext(max_inputs=settings.max_inputs, max_body_bytes=settings.max_body_bytes,
                       max_new_tokens=settings.max_new_tokens, context_length=context, labels=tuple(loaded.labels))
    route = loaded.task.serve_schema(loaded.config, ctx)
    spec = loaded.task.spec
    shares_context = spec.prompt_shares_context  # decoder-only: the server cuts prompts to the room left

    def run_batch(key: tuple[Any, ...], items: list[Any]) -> list[Any]:
        if spec.generates:
            return loaded.predict(items, batch_size=settings.max_batch_size, max_new_tokens=key[0],
                                  max_length=None if shares_context else token_limit)
        texts = [t for t, _ in items]
        pairs = [p for _, p in items] if route.pairs else None
        return loaded.predict(texts, pairs, batch_size=settings.max_batch_size, max_length=token_limit)

    batcher = MicroBatcher(run_batch, settings.max_batch_size, settings.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="tuneforge inference server", version=__version__, lifespan=lifespan,
                  description=f"Serves the {loaded.config.task} model {loaded.artifact.run_id} ({loaded.path}).")
    app.state.model, app.state.settings, app.state.batcher, app.state.route = loaded, settings, batcher, route
    # add_middleware: the last added runs first, so the key is checked before the body is read
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
        _security(app)

    @app.exception_handler(StarletteHTTPException)
    async def undecodable_body(request: Any, exc: StarletteHTTPException) -> Any:
        # FastAPI answers 400 "There was an error parsing the body" for a JSON body that is not UTF-8/16/32;
        # nothing else here raises 400, so it becomes the documented 422 for bad JSON
        if exc.status_code != 400:
            return await http_exception_handler(request, exc)
        return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"], "input": {},
                                         "msg": "the body is not JSON text (UTF-8, UTF-16 or UTF-32)"}]}, 422)

    key_error = {401: {"model": ErrorMessage, "description": "missing or wrong API key"}} if settings.api_key else {}
    too_large = {413: {"model": ErrorMessage, "description": f"body larger than {settings.max_body_bytes} bytes "
                                                             "(--max-body-bytes)"}}

    def check_tokens(texts: list[str], pairs: list[str] | None, limit: int, field: str) -> list[str]:
        counts = loaded.token_counts(texts, pairs)
        if shares_context and 0 in counts:
            i = counts.index(0)  # a prompt that tokenizes to nothing (the document already refuses "")
            raise _validation_error([{"type": "too_few_tokens", "loc": ["body", field, i],
                                      "msg": f"{field}[{i}] has no tokens; a prompt needs at least one"}])
        long_rows = [i for i, n in enumerate(counts) if n > limit]
        if not long_rows:
            return texts
        if not settings.truncate:
            tail = " (with text_pairs)" if pairs else ""
            raise _validation_error([
                {"type": "too_many_tokens", "loc": ["body", field, i],
                 "msg": f"{field}[{i}] has {counts[i]} tokens{tail}; the limit is {limit} ({len(long_rows)} input(s) "
                        "too long; the server truncates instead when started with --truncate)",
                 "ctx": {"tokens": counts[i], "limit": limit}} for i in long_rows[:1]])
        # classifiers and encoder-decoders truncate in predict; decoder-only prompts are cut here
        return cut_prompts(texts, limit, field) if shares_context else texts

    def cut_prompts(texts: list[str], limit: int, field: str) -> list[str]:
        """Cut prompts to `limit` tokens. A cut at a token's character offset can still re-tokenize longer (a
        character split over several byte-level tokens), so each cut is checked and shortened until it fits."""
        cut = loaded.truncate(texts, limit)
        for i, n in enumerate(loaded.token_counts(cut)):
            if n > limit:
                lo, hi = 0, len(cut[i])  # the longest prefix that fits (binary search on characters)
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    lo, hi = (mid, hi) if loaded.token_counts([cut[i][:mid]])[0] <= limit else (lo, mid - 1)
                cut[i] = cut[i][:lo]
                if not lo or loaded.token_counts([cut[i]])[0] > limit:
                    raise _validation_error([{"type": "too_many_tokens", "loc": ["body", field, i],
                                              "msg": f"{field}[{i}] cannot be cut to {limit} tokens: its first "
                                                     "character alone is longer; ask for fewer max_new_tokens"}])
        return cut

    async def submit(key: tuple[Any, ...], items: list[Any]) -> list[Any]:
        try:
            return await batcher.submit(key, items)
        except UserError as err:
            raise _validation_error([{"type": "value_error", "loc": ["body", route.input_field],
                                      "msg": str(err)}]) from None

    @app.get("/health", response_model=Health, summary="liveness (no API key needed)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelInfo, responses=key_error,
             summary="what is served: task, labels, base model, version, limits")
    async def model_info() -> dict[str, Any]:
        limits = {k: v for k, v in asdict(settings).items() if k not in ("host", "port", "api_key")}
        limits["max_input_tokens"] = token_limit
        return {**loaded.describe(), "route": route.path, "limits": limits}

    @app.get("/v1/stats", response_model=Stats, responses=key_error,
             summary="micro-batching counters: model calls and inputs per call")
    async def stats() -> dict[str, Any]:
        return batcher.stats()

    def as_list(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else list(value)

    Request = route.request  # the run's own request model (a class)

    async def classify(request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        field, pair_field = route.input_field, route.pair_field
        texts = as_list(getattr(request, field))
        pairs = as_list(getattr(request, pair_field)) if route.pairs else None
        if pairs is not None and len(pairs) != len(texts):
            raise _validation_error([{"type": "value_error", "loc": ["body", pair_field],
                                      "msg": f"{len(pairs)} {pair_field} for {len(texts)} {field}; give one per "
                                             "input"}])
        if not route.windows:  # a windowing task reads inputs of any length
            check_tokens(texts, pairs, token_limit, field)
        results = await submit((), list(zip(texts, pairs or [None] * len(texts))))
        return {"results": results, "model": loaded.artifact.run_id}

    default_new = int(getattr(getattr(loaded.model, "generation_config", None), "max_new_tokens", None) or 128)

    async def generate(request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        texts = as_list(request.inputs)
        new = min(request.max_new_tokens or default_new, settings.max_new_tokens)
        limit = token_limit
        if shares_context:
            limit = min(token_limit, context - new)
            if limit < 1:
                raise _validation_error([{"type": "value_error", "loc": ["body", "max_new_tokens"], "input": new,
                                          "msg": f"max_new_tokens: {new} leaves no room for a prompt in the model's "
                                                 f"{context}-token context"}])
        texts = check_tokens(texts, None, limit, "inputs")
        results = await submit((new,), texts)
        return {"results": [{"generated_text": r["generated_text"]} for r in results], "max_new_tokens": new,
                "model": loaded.artifact.run_id}

    app.post(route.path, response_model=route.response, summary=route.summary, responses={**key_error, **too_large}
             )(generate if spec.generates else classify)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise UserError(f"--host/--port: cannot listen on {host}:{port} ({err.strerror or err})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(ref: str | os.PathLike, settings: ServeSettings, log_level: str = "info") -> None:
    """Load the model, bind the socket, print the address, and serve until interrupted."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("serve needs FastAPI and uvicorn: pip install 'tuneforge[serve]'") from None
    from tuneforge.inference import LoadedModel

    settings.check()
    settings.api_key = settings.api_key or os.environ.get(API_KEY_ENV) or None
    loaded = LoadedModel(ref)
    app = create_app(loaded, settings)
    route = app.state.route.path
    sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"tuneforge: serving {loaded.config.task} model {loaded.artifact.run_id} on http://{shown}:{port} "
          f"({'API key required' if settings.api_key else 'no API key'}; POST {route})",
          flush=True)
    if not _is_loopback(settings.host) and not settings.api_key:
        print(f"warning: listening on {settings.host} without an API key: anyone who can reach this address can "
              f"use the model (set --api-key or {API_KEY_ENV})", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
