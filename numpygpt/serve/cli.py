"""python -m numpygpt serve: a checkpoint (ours, or a Hugging Face GPT-2 folder) over HTTP.

    python -m numpygpt serve --out-dir out/                    # http://127.0.0.1:8000
    python -m numpygpt serve --init-from gpt2 --host 0.0.0.0 --api-key SECRET

The port is bound here, before uvicorn starts, so that a busy or forbidden port is one clear
error line, and so that --port 0 (any free port) can say which port it got.
"""
import argparse
import os
import socket
import sys
from functools import partial

from numpygpt import cli
from numpygpt.loading import add_model_arguments

PROG = "numpygpt serve"


fail = partial(cli.fail, PROG)


def bounded_int(low, high=None):
    """An argparse type for an integer in low..high (no upper bound when high is None)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            rule = f"in {low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value
    return parse


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description="Serve a numpygpt model over HTTP in OpenAI's "
                       "completions API, with continuous batching and a playground page at /.")
    add_model_arguments(p, "served")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, "
                   "this machine only)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=8000,
                   help="port to listen on; 0 picks a free one (default: 8000)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("NUMPYGPT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $NUMPYGPT_API_KEY). "
                   "Without a key only clients on this machine are served")
    p.add_argument("--model-name", metavar="NAME", help="the model's id in the API "
                   "(default: the checkpoint's folder name)")
    p.add_argument("--max-batch", type=bounded_int(1), default=16, metavar="N",
                   help="sequences decoded together; each holds a KV cache slot (default: 16)")
    p.add_argument("--max-queue", type=bounded_int(0), default=64, metavar="N",
                   help="requests that may wait for a slot; beyond it, 503 (default: 64)")
    p.add_argument("--max-prompt-tokens", type=bounded_int(1), metavar="N",
                   help="longer prompts get 413 (default: the model's context). A larger limit "
                   "is allowed: the model then sees a prompt's last context-length tokens")
    p.add_argument("--max-new-tokens", type=bounded_int(1), default=4096, metavar="N",
                   help="the largest max_tokens a request may ask for (default: 4096)")
    return p.parse_args(argv)


def load(args):
    """(model, tokenizer, default model name) for the checkpoint or folder the flags name."""
    from numpygpt.loading import load_model_and_tokenizer
    model, tokenizer, _, name = load_model_and_tokenizer(args.out_dir, args.checkpoint, args.init_from,
                                                         args.tokenizer)
    return model, tokenizer, name


def listen(host, port):
    """A listening socket on host:port, or one error line."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    sock.setblocking(False)
    return sock


def main(argv=None):
    args = parse_args(argv)
    try:
        import uvicorn

        from .app import create_app, is_loopback
    except ImportError as e:
        fail(f"serving needs FastAPI and uvicorn ({e.name} is missing): pip install 'numpygpt[serve]'")
    import bpe
    from numpygpt import checkpoint, hf

    from .scheduler import Engine

    try:
        model, tokenizer, name = load(args)
    except (checkpoint.CheckpointError, hf.HFError, bpe.VocabError, ValueError) as e:
        fail(str(e))
    sock = listen(args.host, args.port)
    engine = Engine(model, tokenizer, max_batch=args.max_batch, max_queue=args.max_queue)
    app = create_app(engine, tokenizer, model_name=args.model_name or name, api_key=args.api_key,
                     max_prompt_tokens=args.max_prompt_tokens or model.config.block_size,
                     max_new_tokens=args.max_new_tokens)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"{PROG}: serving {args.model_name or name} on http://{url_host}:{port}/ "
          f"(batch {args.max_batch}, Ctrl-C to stop)", flush=True)
    if args.api_key is None and not (args.host == "localhost" or is_loopback(args.host)):
        print(f"{PROG}: note: no --api-key, so requests from other machines get 401",
              file=sys.stderr, flush=True)
    engine.start()
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises Ctrl-C
        print(f"{PROG}: stopped", file=sys.stderr)
    finally:
        engine.close()
