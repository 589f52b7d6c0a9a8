"""Command line: train a vocabulary, encode text to ids, decode ids to text.

    python -m bpe train FILES --vocab-size N --out DIR
    python -m bpe encode --vocab DIR  < text.txt  > ids.txt
    python -m bpe decode --vocab DIR  < ids.txt   > text.txt

encode reads UTF-8 text on stdin and writes its ids, separated by spaces, on stdout; special
tokens in the text (such as <|endoftext|>) become their ids, so decode then encode gives the
ids back. decode reads whitespace-separated ids and writes their bytes exactly. A problem with
the input prints one line on stderr and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .encoder import load
from .trainer import train


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error here."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m bpe", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_cmd = commands.add_parser("train", help="learn a vocabulary from UTF-8 text files")
    train_cmd.add_argument("files", nargs="+", type=Path, help="UTF-8 text files")
    train_cmd.add_argument("--vocab-size", type=int, required=True,
                           help="ids in the vocabulary: 256 bytes + merges + special tokens")
    train_cmd.add_argument("--out", type=Path, required=True,
                           help="folder to write encoder.json and vocab.bpe into")
    train_cmd.add_argument("--special", action="append", metavar="TEXT",
                           help="a special token (repeatable; default <|endoftext|>)")
    train_cmd.add_argument("--no-special", action="store_true",
                           help="train without any special token")
    train_cmd.add_argument("--quiet", action="store_true", help="print no progress")

    for name, what in (("encode", "UTF-8 text on stdin to token ids on stdout"),
                       ("decode", "token ids on stdin to text on stdout")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--vocab", type=Path, required=True,
                             help="folder holding encoder.json and vocab.bpe")
    return parser.parse_args(argv)


def run_train(args: argparse.Namespace) -> None:
    specials = [] if args.no_special else (args.special or ["<|endoftext|>"])
    tokenizer = train(args.files, args.vocab_size, specials,
                      verbose=False if args.quiet else None)
    tokenizer.save(args.out)
    print(f"wrote {tokenizer.n_vocab} tokens ({len(tokenizer.merges)} merges) to {args.out}",
          file=sys.stderr)


def run_encode(args: argparse.Namespace) -> None:
    tokenizer = load(args.vocab)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"stdin is not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start})") from None
    ids = tokenizer.encode(text, allowed_special="all")
    sys.stdout.write(" ".join(map(str, ids)) + "\n")


def run_decode(args: argparse.Namespace) -> None:
    tokenizer = load(args.vocab)
    ids = []
    for word in sys.stdin.buffer.read().split():
        try:
            ids.append(int(word))
        except ValueError:
            raise ValueError(f"stdin holds {word.decode('utf-8', 'replace')!r}; expected "
                             f"token ids as whitespace-separated integers") from None
    sys.stdout.buffer.write(tokenizer.decode_bytes(ids))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = {"train": run_train, "encode": run_encode, "decode": run_decode}[args.command]
    try:
        command(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (as `| head` does): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, TypeError) as err:
        message = f"{err.filename}: {err.strerror}" if isinstance(err, OSError) and \
            err.filename else str(err)
        print(f"python -m bpe {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
