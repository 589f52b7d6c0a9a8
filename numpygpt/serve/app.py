"""The HTTP side: an OpenAI-compatible FastAPI application over a running scheduler.Engine.

    POST /v1/completions     prompt(s) in, completions out, whole or as server-sent events;
                             logprobs and echo, for evaluation harnesses
    POST /tokenize           text -> token ids, and POST /detokenize back (vLLM's names)
    GET  /v1/models          the one model served (and /v1/models/{id})
    GET  /health             liveness, and how busy the engine is
    GET  /metrics            Prometheus' text format (serve/metrics.py)
    GET  /                   the playground page

Every error, including FastAPI's own validation errors and unknown routes, is OpenAI's error
JSON with the status a client expects: 400 bad parameters, 401 no or wrong key, 404 unknown
model or route, 413 prompt over the limit, 503 queue full. Generation runs on the engine's
thread; the event loop only waits for its pieces, so it keeps accepting requests. A client
that goes away, streaming or not, has its sequences cancelled: their slots are free at the
next step. (Authentication is plain ASGI middleware for that reason: Starlette's
`@app.middleware("http")` hides a disconnect from the route.)
"""
import asyncio
import hmac
import ipaddress
import json
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ..inference.generate import TextStream
from ..inference.sampling import Sampler
from . import protocol
from .scheduler import NeverFits, QueueFull
from .scheduler import Request as EngineRequest

DISCONNECT_POLL_SECONDS = 0.25  # how soon a vanished client's slots are given back
OPEN_PATHS = ("/", "/health", "/metrics")   # served without the API key: no model output


class APIError(Exception):
    """An error to answer with: HTTP status and OpenAI's error fields."""

    def __init__(self, status, message, *, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status = status
        self.body = protocol.error_body(message, type=type, param=param, code=code)


def is_loopback(host):
    """A loopback address, IPv6's (::1), IPv4's (127.0.0.0/8), or IPv4's as IPv6 writes it on
    a dual-stack socket (::ffff:127.0.0.1)."""
    try:
        address = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return False
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: bytes) -> str:
    """The name in a Host header, without its port: b"[::1]:8000" -> "::1"."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


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


class Gate:
    """ASGI middleware, what every request passes first. With an API key, every path but
    OPEN_PATHS needs `Authorization: Bearer KEY`; without one, only clients on a loopback
    address are served, and only under a local Host name (so a web page that rebinds its own
    name to 127.0.0.1 cannot reach the server). A body over max_body bytes is refused before
    it is parsed. It counts the responses by status for /metrics."""

    def __init__(self, app, api_key, metrics, max_body, host_names=()):
        self.app, self.api_key, self.metrics, self.max_body = app, api_key, metrics, max_body
        self.host_names = {*LOCAL_NAMES, *(n.lower() for n in host_names)}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope) or self.declared_too_large(scope)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, refusal = await self.read_body(receive)
            receive = replay(body, receive)
        if refusal is not None:
            status, message, code = refusal
            self.metrics.response(status)
            return await JSONResponse(protocol.error_body(message, code=code), status_code=status)(scope, receive, send)

        async def counted(message):
            if message["type"] == "http.response.start":
                self.metrics.response(message["status"])
            await send(message)
        await self.app(scope, receive, counted)

    def refusal(self, scope):
        """(status, message, code) of why this request may not be served, or None."""
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None:
            given = headers.get(b"authorization", b"")
            if scope["path"] not in OPEN_PATHS and \
                    not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                return 401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'", "invalid_api_key"
            return None
        client = scope.get("client")
        if not is_loopback(client[0] if client else None):
            return 401, ("this server has no API key, so it serves its own machine only; restart it with "
                         "--api-key to serve other machines"), "invalid_api_key"
        if b"host" in headers and host_name(headers[b"host"]) not in self.host_names:
            return 403, (f"the Host {headers[b'host'].decode('latin-1')!r} is not this server's; without an API key "
                         f"it answers only to {', '.join(sorted(self.host_names))}"), "forbidden_host"
        return None

    def declared_too_large(self, scope):
        """A 413 at once for a body whose Content-Length is over max_body: there is no need to
        wait for bytes that would be refused (or, from a client that lies, never come)."""
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.strip().isdigit() and int(declared) > self.max_body:
            return 413, f"the request body is over {self.max_body:,} bytes; send less at a time", "request_too_large"
        return None

    async def read_body(self, receive):
        """(the body, None), or (what was read, a 413 refusal) once it passes max_body."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return b"", (413, f"the request body is over {self.max_body:,} bytes; send less at a time",
                             "request_too_large")
            if not message.get("more_body"):
                return b"".join(chunks), None


def replay(body: bytes, receive):
    """An ASGI receive that hands out `body` once, then listens on (for the disconnect)."""
    sent = False

    async def receive_again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return receive_again


def create_app(engine, tokenizer, *, model_name, api_key=None, max_prompt_tokens,
               max_new_tokens, document_start=None, max_body=4 << 20, host_names=()):
    """The application serving `engine` (started and closed by the caller).

    tokenizer: a bpe.Tokenizer; max_prompt_tokens: longer prompts get 413 (a prompt longer
    than the context is decoded on its last block_size tokens, as `numpygpt sample` does);
    max_new_tokens: the largest max_tokens a request may ask for. Without api_key, only
    clients on a loopback address are served (every other request gets 401).
    document_start: the tokens an empty prompt stands for, the start of a new text
    (default: <|endoftext|>, else a newline). max_body: bytes a request body may have.
    host_names: names besides localhost's that the Host header may give without a key.
    """
    app = FastAPI(title="numpygpt", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Gate, api_key=api_key, metrics=engine.metrics, max_body=max_body, host_names=host_names)
    longest_token = max(len(token) for token in tokenizer.tokens)
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

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return playground

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, **engine.stats()}

    @app.get("/metrics")
    async def metrics():
        stats = engine.stats()
        gauges = {"queue_sequences": ("Sequences waiting for a slot.", stats["waiting"]),
                  "active_slots": ("Slots decoding a sequence.", stats["active"]),
                  "slots": ("Slots of the KV cache.", stats["slots"])}
        return PlainTextResponse(engine.metrics.render(gauges), media_type="text/plain; version=0.0.4")

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

    def token_text(token):
        """A token as text, or `bytes:\\xe2\\x80` for bytes that are not whole characters (as
        OpenAI writes them), so that no two tokens look alike."""
        data = tokenizer.decode_bytes([token])
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in data)

    def encode(prompt):
        """A prompt's token ids: a string encoded (the empty one starts a new text), or ids
        checked against the vocabulary."""
        if isinstance(prompt, str):
            # A token is at most longest_token bytes: a longer text cannot fit, whatever it says.
            if len(prompt.encode("utf-8", errors="replace")) > max_prompt_tokens * longest_token:
                raise APIError(413, f"the prompt is longer than {max_prompt_tokens} tokens can be; this server "
                               f"takes at most {max_prompt_tokens}", param="prompt", code="context_length_exceeded")
            ids = list(start) if prompt == "" else tokenizer.encode(prompt, allowed_special="all")
        else:
            ids = list(prompt)
            if max(ids) >= tokenizer.n_vocab:
                raise APIError(400, f"token id {max(ids)} is outside the vocabulary (0..{tokenizer.n_vocab - 1})",
                               param="prompt", code="invalid_value")
        if len(ids) > max_prompt_tokens:
            raise APIError(413, f"the prompt is {len(ids)} tokens long; this server takes at "
                           f"most {max_prompt_tokens}", param="prompt",
                           code="context_length_exceeded")
        return ids

    @app.post("/tokenize")
    async def tokenize(body: protocol.TokenizeRequest):
        check_model(body.model)
        ids = await asyncio.to_thread(tokenizer.encode, body.prompt, allowed_special="all")
        return {"tokens": ids, "count": len(ids), "max_model_len": max_prompt_tokens}

    @app.post("/detokenize")
    async def detokenize(body: protocol.DetokenizeRequest):
        check_model(body.model)
        if body.tokens and max(body.tokens) >= tokenizer.n_vocab:
            raise APIError(400, f"token id {max(body.tokens)} is outside the vocabulary "
                           f"(0..{tokenizer.n_vocab - 1})", param="tokens", code="invalid_value")
        return {"prompt": tokenizer.decode(body.tokens)}

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
        prompts = await asyncio.to_thread(lambda: [encode(prompt) for prompt in body.prompts])
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
                    held[piece.index].append(piece)
                    return
                earlier, held[piece.index] = held[piece.index], []
                piece.text = "".join(p.text for p in earlier) + piece.text
                piece.logprobs = [e for p in earlier for e in p.logprobs] + piece.logprobs
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
            requests.append(EngineRequest(prompt=prompt, max_tokens=body.max_tokens,
                                          sampler=sampler, on_piece=on_piece, n=body.n,
                                          seed=body.seed, stop=body.stops, logprobs=body.logprobs,
                                          echo=body.echo))
        try:
            engine.submit(requests)
        except NeverFits as e:
            raise APIError(400, str(e), param="prompt", code="invalid_value") from None
        except QueueFull as e:
            raise APIError(503, str(e), type="server_error", code="server_overloaded") from None
        run = Completion(http, requests, pieces, len(prompts) * body.n,
                         token_text if body.logprobs is not None else None, tokenizer.decode_bytes)

        def usage():  # known once every choice has finished
            return protocol.usage(sum(map(len, prompts)), run.completion_tokens)

        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(run.events(model_name, usage if include_usage else None),
                                     media_type="text/event-stream")
        try:
            choices = await run.collect()
        finally:
            run.cancel()
        return protocol.completion(run.id, model_name, choices, usage())

    return app


class Completion:
    """One HTTP request's engine requests, seen from the event loop: their pieces as they come,
    and their cancellation when the client goes away.

    token_text: id -> str when the request asked for logprobs (None otherwise); decode_bytes:
    ids -> bytes, to find where each token's text begins."""

    def __init__(self, http, requests, pieces, n_choices, token_text=None, decode_bytes=None):
        self.http = http
        self.requests = requests
        self.pieces = pieces
        self.n_choices = n_choices
        self.token_text = token_text
        self.id = protocol.completion_id()
        self.completion_tokens = 0
        # Per choice, the characters its tokens have made so far: a token's text_offset.
        self.texts = [TextStream(decode_bytes) for _ in range(n_choices)] if token_text else None
        self.offsets = [0] * n_choices

    def cancel(self):
        for request in self.requests:
            request.cancel()

    def choice(self, piece):
        """The choice dict for a piece, with its logprobs when they were asked for."""
        logprobs = None
        if self.token_text is not None:
            offsets = []
            for entry in piece.logprobs:
                offsets.append(self.offsets[piece.index])
                self.offsets[piece.index] += len(self.texts[piece.index].push(entry.token))
            logprobs = protocol.logprobs(piece.logprobs, self.token_text, offsets)
        return protocol.choice(piece.index, piece.text, piece.finish_reason, logprobs)

    async def each_piece(self):
        """Pieces until every choice has finished; stops early if the client disconnects."""
        finished = 0
        while finished < self.n_choices:
            try:
                piece = await asyncio.wait_for(self.pieces.get(), DISCONNECT_POLL_SECONDS)
            except TimeoutError:
                if await self.http.is_disconnected():
                    self.cancel()
                    return
                continue
            if piece.finish_reason == "error":
                raise APIError(500, piece.text, type="server_error")
            if piece.finish_reason:
                finished += 1
                self.completion_tokens += piece.completion_tokens
            yield piece

    async def collect(self):
        """Every choice, whole, in index order."""
        choices = [None] * self.n_choices
        async for piece in self.each_piece():
            choices[piece.index] = self.choice(piece)
        return choices

    async def events(self, model_name, usage):
        """Server-sent events: a chunk per piece, the usage if asked, then [DONE]."""
        def event(data):
            return f"data: {json.dumps(data)}\n\n"
        try:
            async for piece in self.each_piece():
                yield event(protocol.completion(self.id, model_name, [self.choice(piece)], None))
            if usage is not None:
                yield event(protocol.completion(self.id, model_name, [], usage()))
            yield "data: [DONE]\n\n"
        except APIError as e:  # the stream still ends as a stream does
            yield event(e.body)
            yield "data: [DONE]\n\n"
        finally:
            self.cancel()
