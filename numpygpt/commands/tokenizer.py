"""Learn a byte-level BPE vocabulary, or encode and decode text with one.

    numpygpt tokenizer train FILES --vocab-size N --out DIR
    numpygpt tokenizer encode --vocab DIR  < text.txt  > ids.txt
    numpygpt tokenizer decode --vocab DIR  < ids.txt   > text.txt

encode reads UTF-8 text on stdin and writes its ids, separated by spaces, on stdout; special
tokens in the text (such as <|endoftext|>) become their ids, so decode then encode gives the
ids back. decode reads whitespace-separated ids and writes their bytes exactly. The files are
GPT-2's (encoder.json + vocab.bpe): `--vocab data/gpt2` is GPT-2's own tokenizer.
"""
import sys
from pathlib import Path

import bpe

from ..data.tokenizers import load_tokenizer
from ..errors import ConfigError, DataError
from ..progress import Progress
from .args import folder, integer


def add_arguments(p):
    commands = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = commands.add_parser("train", help="learn a vocabulary from UTF-8 text files",
                                description="Learn a byte-level BPE vocabulary from UTF-8 text files.")
    train.add_argument("files", nargs="+", type=Path, metavar="FILE", help="UTF-8 text files")
    train.add_argument("--vocab-size", type=integer(257), required=True, metavar="N",
                       help="ids in the vocabulary: 256 bytes + merges + special tokens")
    train.add_argument("--out", type=folder, required=True, metavar="DIR",
                       help="folder to write encoder.json and vocab.bpe into")
    train.add_argument("--special", action="append", metavar="TEXT",
                       help="a special token (repeatable; default: <|endoftext|>)")
    train.add_argument("--no-special", action="store_true", help="train without any special token")
    train.add_argument("--quiet", action="store_true", help="print no progress")
    for name, what in (("encode", "UTF-8 text on stdin to token ids on stdout"),
                       ("decode", "token ids on stdin to text on stdout")):
        command = commands.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        command.add_argument("--vocab", type=Path, required=True, metavar="DIR",
                             help="folder holding encoder.json and vocab.bpe (data/gpt2: GPT-2's)")


def run(args):
    {"train": run_train, "encode": run_encode, "decode": run_decode}[args.action](args)


def run_train(args):
    for file in args.files:
        if file.is_dir():
            raise DataError(f"{file} is a folder; give the text files in it")
        if not file.is_file():
            raise DataError(f"{file}: no such file")
    if all(file.stat().st_size == 0 for file in args.files):
        raise DataError("the text is empty: there is nothing to learn merges from")
    if args.no_special and args.special:
        raise ConfigError("--special and --no-special contradict each other; give one")
    args.out = Path(args.out)
    check_vocab_folder(args.out)
    specials = [] if args.no_special else (args.special or ["<|endoftext|>"])
    progress = Progress(quiet=args.quiet)
    try:
        tokenizer = bpe.train(args.files, args.vocab_size, specials, progress=progress.status)
    except UnicodeDecodeError as e:
        raise DataError(f"the text is not UTF-8 (bad byte at offset {e.start})") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    progress.close()
    try:
        tokenizer.save(args.out)  # each file is written whole, never left half written
    except OSError as e:
        raise DataError(f"cannot write {e.filename or args.out}: {e.strerror or e}") from None
    progress.message(f"wrote {tokenizer.n_vocab} tokens ({len(tokenizer.merges)} merges) to {args.out}")


def check_vocab_folder(folder: Path):
    """Before training: `folder` can take a vocabulary and holds none already (a vocabulary
    written over, a checkpoint's own tokenizer for one, would change every id it gives)."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--out {folder} is a file, not a folder")
    for name in ("encoder.json", "vocab.bpe", "vocab.json", "merges.txt"):
        if (folder / name).exists():
            raise DataError(f"--out {folder} already holds a vocabulary ({name}); write the new one to another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write to --out {folder}: {e.strerror or e}") from None


def read_stdin_text() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"stdin is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None


def run_encode(args):
    tokenizer = load_tokenizer(args.vocab)
    ids = tokenizer.encode(read_stdin_text(), allowed_special="all")
    sys.stdout.write(" ".join(map(str, ids)) + "\n")


def run_decode(args):
    tokenizer = load_tokenizer(args.vocab)
    ids = []
    for word in sys.stdin.buffer.read().split():
        try:
            ids.append(int(word))
        except ValueError:
            raise DataError(f"stdin holds {word.decode('utf-8', 'replace')!r}; expected token ids as "
                            "whitespace-separated integers") from None
    try:
        sys.stdout.buffer.write(tokenizer.decode_bytes(ids))
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(f"stdin holds an id the vocabulary does not have ({e})") from None
