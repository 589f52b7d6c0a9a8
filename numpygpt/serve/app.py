"""The HTTP side: an OpenAI-compatible FastAPI application over a running scheduler.Engine.

    POST /v1/completions     prompt(s) in, completions out, whole or as server-sent events
    GET  /v1/models          the one model served (and /v1/models/{id})
    GET  /health             liveness, and how busy the engine is
    GET  /                   the playground page

Every error, including FastAPI's own validation errors and unknown routes, is OpenAI's error
JSON with the status a client expects: 400 bad parameters, 401 no or wrong key, 404 unknown
model or route, 413 prompt over the limit, 503 queue full. Generation runs on the engine's
thread; the event loop only waits for its pieces, so it keeps accepting requests.
"""
import asyncio
import hmac
import ipaddress
import json
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..inference.sampling import Sampler
from . import protocol
from .scheduler import QueueFull
from .scheduler import Request as EngineRequest

DISCONNECT_POLL_SECONDS = 0.25  # how soon a vanished client's slots are given back
OPEN_PATHS = ("/", "/health")   # served without the API key: no model output


class APIError(Exception):
    """An error to answer with: HTTP status and OpenAI's error fields."""

    def __init__(self, status, message, *, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status = status
        self.body = protocol.error_body(message, type=type, param=param, code=code)


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except (TypeError, ValueError):
        return False


def validation_error(exc):
    """FastAPI's RequestValidationError as a 400 naming the first parameter at fault."""
    errors = exc.errors()
    if errors[0].get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {errors[0]['ctx']['error']}",
                        code="invalid_json")
    loc = [str(part) for part in errors[0].get("loc", ()) if part != "body"]
    param = loc[0] if loc else None
    messages = dict.fromkeys(e["msg"] for e in errors
                             if [str(p) for p in e.get("loc", ()) if p != "body"][:1] == loc[:1])
    if errors[0].get("type") == "extra_forbidden":
        message = f"unrecognized request argument supplied: {param}"
    elif param is None:
        message = f"the request body is not a valid completion request: {'; '.join(messages)}"
    else:
        message = f"invalid {param}: {'; '.join(messages)}"
    return APIError(400, message, param=param, code="invalid_value")


def create_app(engine, tokenizer, *, model_name, api_key=None, max_prompt_tokens,
               max_new_tokens, document_start=None):
    """The application serving `engine` (started and closed by the caller).

    tokenizer: a bpe.Tokenizer; max_prompt_tokens: longer prompts get 413 (a prompt longer
    than the context is decoded on its last block_size tokens, as `numpygpt sample` does);
    max_new_tokens: the largest max_tokens a request may ask for. Without api_key, only
    clients on a loopback address are served (every other request gets 401).
    document_start: the tokens an empty prompt stands for, the start of a new text
    (default: <|endoftext|>, else a newline).
    """
    app = FastAPI(title="numpygpt", docs_url=None, redoc_url=None, openapi_url=None)
    playground = resources.files(__package__).joinpath("playground.html").read_text()
    created = int(time.time())
    start = document_start or ([tokenizer.eot_token] if tokenizer.eot_token is not None
                               else tokenizer.encode_ordinary("\n"))

    @app.exception_handler(APIError)
    async def api_error(request, exc):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc):
        return await api_error(request, validation_error(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        if exc.status_code == 404:
            error = APIError(404, f"no such route: {request.method} {request.url.path}",
                             code="unknown_url")
        elif exc.status_code == 405:
            error = APIError(405, f"{request.method} is not allowed on {request.url.path}",
                             code="method_not_allowed")
        else:
            error = APIError(exc.status_code, str(exc.detail))
        return await api_error(request, error)

    @app.middleware("http")
    async def authenticate(request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if request.url.path not in OPEN_PATHS and \
                    not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse(protocol.error_body(
                    "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                    code="invalid_api_key"), status_code=401)
        elif not is_loopback(request.client.host if request.client else None):
            return JSONResponse(protocol.error_body(
                "this server has no API key, so it serves its own machine only; restart it "
                "with --api-key to serve other machines", code="invalid_api_key"), status_code=401)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return playground

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [protocol.model_card(model_name, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(model_id)
        return protocol.model_card(model_name, created)

    def check_model(name):
        if name is not None and name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{model_name!r}", param="model", code="model_not_found")

    def encode(text):
        """A prompt's token ids; the empty prompt starts a new document."""
        if text == "":
            return list(start)
        ids = tokenizer.encode(text, allowed_special="all")
        if len(ids) > max_prompt_tokens:
            raise APIError(413, f"the prompt is {len(ids)} tokens long; this server takes at "
                           f"most {max_prompt_tokens}", param="prompt",
                           code="context_length_exceeded")
        return ids

    @app.post("/v1/completions")
    async def completions(body: protocol.CompletionRequest, http: Request):
        check_model(body.model)
        unsupported = body.unsupported()
        if unsupported:
            raise APIError(400, f"{unsupported} is not supported by this server; leave it out",
                           param=unsupported, code="unsupported_parameter")
        if body.n > engine.max_batch:
            raise APIError(400, f"n must be at most {engine.max_batch} (the server's batch)",
                           param="n", code="invalid_value")
        if body.max_tokens > max_new_tokens:
            raise APIError(400, f"max_tokens must be at most {max_new_tokens}",
                           param="max_tokens", code="invalid_value")
        prompts = await asyncio.to_thread(lambda: [encode(text) for text in body.prompts])
        sampler = Sampler(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p)
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        held = [[] for _ in range(len(prompts) * body.n)]
        requests = []
        for i, prompt in enumerate(prompts):
            def on_piece(piece, offset=i * body.n):  # called on the engine's thread
                piece.index += offset
                if not body.stream and not piece.finish_reason:
                    # Waking the event loop for every token costs the engine thread the GIL
                    # once per token per request; without a stream, once per choice suffices.
                    held[piece.index].append(piece.text)
                    return
                piece.text = "".join(held[piece.index]) + piece.text
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
            requests.append(EngineRequest(prompt=prompt, max_tokens=body.max_tokens,
                                          sampler=sampler, on_piece=on_piece, n=body.n,
                                          seed=body.seed, stop=body.stops))
        try:
            engine.submit(requests)
        except QueueFull as e:
            raise APIError(503, str(e), type="server_error", code="server_overloaded") from None
        run = Completion(http, requests, pieces, len(prompts) * body.n)

        def usage():  # known once every choice has finished
            return protocol.usage(sum(map(len, prompts)), run.completion_tokens)

        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(run.events(model_name, usage if include_usage else None),
                                     media_type="text/event-stream")
        try:
            texts, finishes = await run.collect()
        finally:
            run.cancel()
        return protocol.completion(run.id, model_name,
                                   [protocol.choice(i, text, finish) for i, (text, finish)
                                    in enumerate(zip(texts, finishes))], usage())

    return app


class Completion:
    """One HTTP request's engine requests, seen from the event loop: their pieces as they come,
    and their cancellation when the client goes away."""

    def __init__(self, http, requests, pieces, n_choices):
        self.http = http
        self.requests = requests
        self.pieces = pieces
        self.n_choices = n_choices
        self.id = protocol.completion_id()
        self.completion_tokens = 0

    def cancel(self):
        for request in self.requests:
            request.cancel()

    async def each_piece(self):
        """Pieces until every choice has finished; stops early if the client disconnects."""
        finished = 0
        while finished < self.n_choices:
            try:
                piece = await asyncio.wait_for(self.pieces.get(), DISCONNECT_POLL_SECONDS)
            except TimeoutError:
                if await self.http.is_disconnected():
                    return
                continue
            if piece.finish_reason == "error":
                raise APIError(500, piece.text, type="server_error")
            if piece.finish_reason:
                finished += 1
                self.completion_tokens += piece.completion_tokens
            yield piece

    async def collect(self):
        """Every choice's text and finish_reason, in index order."""
        texts, finishes = [""] * self.n_choices, [None] * self.n_choices
        async for piece in self.each_piece():
            texts[piece.index] += piece.text
            finishes[piece.index] = piece.finish_reason or finishes[piece.index]
        return texts, finishes

    async def events(self, model_name, usage):
        """Server-sent events: a chunk per piece, the usage if asked, then [DONE]."""
        def event(data):
            return f"data: {json.dumps(data)}\n\n"
        try:
            async for piece in self.each_piece():
                yield event(protocol.completion(self.id, model_name, [protocol.choice(
                    piece.index, piece.text, piece.finish_reason)], None))
            if usage is not None:
                yield event(protocol.completion(self.id, model_name, [], usage()))
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield event(e.body)
        finally:
            self.cancel()
