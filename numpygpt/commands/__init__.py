"""`numpygpt COMMAND [options]`: every command numpygpt has, behind one entry point.

Each command is a module here with `add_arguments(parser)` and `run(args)`; it calls the
library and nothing more. This file is the one place where a command's failure becomes what
the user sees: a `UserError` (numpygpt.errors) is one line `numpygpt CMD: error: ...` and exit
code 2; Ctrl-C is exit code 130; a reader that goes away (`| head`) ends the output quietly.
"""
import importlib
import os
import sys

from ..errors import UserError
from .args import ArgumentParser, fail

# name -> what it does, in the order `numpygpt --help` lists them
COMMANDS = {
    "train": "train a GPT on a text corpus (tiny Shakespeare by default), or fine-tune GPT-2",
    "sample": "write text with a trained model (temperature, top-k, top-p)",
    "eval": "score a model on a whole text: nats/token, perplexity, bits per byte",
    "prepare": "tokenize a corpus of any size into shards for train --data",
    "serve": "serve a model over HTTP in OpenAI's completions API, with a playground page",
    "export": "write a checkpoint as a Hugging Face GPT-2 folder",
    "tune": "search hyperparameters with Optuna, stopping weak trials early",
    "gradcheck": "check every hand-written backward pass against finite differences",
    "tokenizer": "learn a byte-level BPE, or encode and decode text with one",
}
MODULES = {"eval": "evaluate"}  # `eval` is a Python built-in, not a good module name


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return ("usage: numpygpt COMMAND [options]\n\nGPT-2 in pure NumPy: every forward and backward pass "
            "written by hand.\n\ncommands:\n" + "\n".join(lines) +
            "\n\n`numpygpt COMMAND --help` tells more; `python -m numpygpt` works the same.\n")


def build_parser(name: str, prog: str | None = None) -> tuple[ArgumentParser, object]:
    """The parser of command `name`, and its module."""
    module = importlib.import_module(f".{MODULES.get(name, name)}", __package__)
    parser = ArgumentParser(prog=prog or f"numpygpt {name}", description=module.__doc__)
    module.add_arguments(parser)
    return parser, module


def main(argv=None, prog: str | None = None) -> int:
    """Run `numpygpt ARGV...`; prog: the name to show instead of `numpygpt CMD` (the
    train.py and sample.py shims). Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(overview()) if argv else sys.stderr.write(overview())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        fail("numpygpt", f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    kernels = os.environ.get("NUMPYGPT_KERNELS", "numba")
    if kernels not in ("numba", "numpy"):  # read when the kernels load, so say it first
        fail(prog or f"numpygpt {name}", f"NUMPYGPT_KERNELS must be numba or numpy, not {kernels!r}")
    prog = prog or f"numpygpt {name}"
    user_errors = (UserError,)  # and the tokenizer's, once it is imported (below)
    try:
        parser, module = build_parser(name, prog)  # imports the command's library: a moment
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit as e:  # --help (0) or a bad flag (2, its one line already printed)
            return e.code
        args.prog = prog
        from bpe import VocabError
        user_errors = (UserError, VocabError)
        code = module.run(args)
        sys.stdout.flush()
    except KeyboardInterrupt as e:  # its message, if any, says what was kept
        print(f"\n{prog}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # after the clauses above: a re-raise here skips any below
        if not isinstance(e, user_errors):
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return code or 0
