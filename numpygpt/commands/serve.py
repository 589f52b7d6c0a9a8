"""Serve a model over HTTP in OpenAI's completions API, with continuous batching and a
playground page at /.

    numpygpt serve                                        # out/'s best checkpoint on http://127.0.0.1:8000
    numpygpt serve --init-from gpt2 --host 0.0.0.0 --api-key SECRET

The port is bound here, before uvicorn starts, so that a busy or forbidden port is one clear
error line, and so that --port 0 (any free port) can say which port it got.
"""
import os
import signal
import socket

from ..errors import ConfigError
from ..inference.loading import add_model_arguments, load_model
from ..progress import Progress
from .args import integer, real


def add_arguments(p):
    add_model_arguments(p, "served")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=integer(0, 65535), default=8000, help="port to listen on; 0 picks a free one")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("NUMPYGPT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $NUMPYGPT_API_KEY). "
                   "Without a key only clients on this machine are served")
    p.add_argument("--model-name", metavar="NAME", help="the model's id in the API "
                   "(default: the output directory's or folder's name)")
    p.add_argument("--max-batch", type=integer(1), default=16, metavar="N",
                   help="sequences decoded together; each holds a KV cache slot")
    p.add_argument("--max-queue", type=integer(0), default=64, metavar="N",
                   help="requests that may wait for a slot; beyond it, 503")
    p.add_argument("--max-prompt-tokens", type=integer(1), metavar="N",
                   help="longer prompts get 413 (default: the model's context). A larger limit "
                   "is allowed: the model then sees a prompt's last context-length tokens")
    p.add_argument("--max-new-tokens", type=integer(1), default=4096, metavar="N",
                   help="the largest max_tokens a request may ask for")
    p.add_argument("--max-request-bytes", type=integer(1024), default=4 << 20, metavar="N",
                   help="the largest request body; a larger one gets 413 before it is read whole")
    p.add_argument("--shutdown-grace", type=real(0), default=10.0, metavar="S",
                   help="seconds Ctrl-C or SIGTERM lets requests in flight finish; then their streams end "
                   "with an error (a second signal ends them at once)")


def listen(host, port):
    """A listening socket on host:port."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def run(args):
    if args.api_key == "":
        raise ConfigError("--api-key is empty (or NUMPYGPT_API_KEY is set to nothing): give a key, or leave it out "
                          "to serve this machine alone")
    try:
        import uvicorn

        from ..serve.app import create_app, is_loopback
    except ImportError as e:
        raise ConfigError(f"serving needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'numpygpt[serve]'") from None
    from ..serve.connections import HeadersInTime
    from ..serve.scheduler import Engine

    progress = Progress()
    sock = listen(args.host, args.port)  # first: a busy port needs no model loaded to say so
    loaded = load_model(args.out_dir, args.checkpoint, args.init_from, args.tokenizer, args.quantize)
    progress.message(f"{args.prog}: loaded {loaded.description}")
    model, tokenizer = loaded.model, loaded.tokenizer
    name = args.model_name or loaded.name
    engine = Engine(model, tokenizer, max_batch=args.max_batch, max_queue=args.max_queue)
    app = create_app(engine, tokenizer, model_name=name, api_key=args.api_key,
                     max_prompt_tokens=args.max_prompt_tokens or model.config.block_size,
                     max_new_tokens=args.max_new_tokens, document_start=loaded.document_start(),
                     max_body=args.max_request_bytes, host_names=(args.host,))
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"{args.prog}: serving {name} on http://{url_host}:{port}/ (batch {args.max_batch}, Ctrl-C to stop)",
          flush=True)
    if args.api_key is None and not (args.host == "localhost" or is_loopback(args.host)):
        progress.message(f"{args.prog}: note: no --api-key, so requests from other machines get 401")
    engine.start()
    # uvicorn shuts down gracefully on SIGINT and SIGTERM alike, then raises the signal again
    # under the handler it found: SIGTERM's then ends the command as Ctrl-C's does.
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=args.shutdown_grace,
                                http=HeadersInTime)
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raised the signal
        progress.message(f"{args.prog}: stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.close()


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt
