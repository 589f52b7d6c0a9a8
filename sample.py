"""Sample text from a trained model.

    python sample.py --top-p 0.9                          # the latest checkpoint in out/
    python sample.py --prompt "ROMEO:" --num-samples 3 --max-new-tokens 100 --seed 1
    echo "Once upon a time" | python sample.py --prompt - --temperature 0

With no prompt, samples start a new document (the tokenizer's <|endoftext|>). Text is printed
as it is generated when the output is a terminal; the samples come one after another, the
first streamed while the others are generated with it in the same batch.
"""
import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

import bpe
from numpygpt import checkpoint, cli, hf
from numpygpt.generate import DONE, TextStream, generate
from numpygpt.loading import add_model_arguments, load_model_and_tokenizer
from numpygpt.sampling import Sampler

PROG = "sample.py"
SEPARATOR = "---------------\n"


fail = partial(cli.fail, PROG)


def checked(convert, rule, ok):
    """An argparse type: `convert` the text, then insist that ok(value), else say the rule."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return parse


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description="Sample text from a trained numpygpt model.")
    add_model_arguments(p, "used")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="text to continue; '-' reads it from stdin "
                        "(default: start a new document)")
    prompt.add_argument("--prompt-file", type=Path, metavar="PATH", help="read the prompt from this file")
    p.add_argument("--num-samples", type=checked(int, "at least 1", lambda n: n >= 1), default=1,
                   metavar="N", help="samples to write, generated together (default: 1)")
    p.add_argument("--max-new-tokens", type=checked(int, "0 or more", lambda n: n >= 0),
                   default=200, metavar="N", help="tokens to generate per sample (default: 200)")
    p.add_argument("--temperature", type=checked(float, "0 (greedy) or more", lambda t: t >= 0),
                   default=1.0, metavar="T", help="0 always picks the most likely token (default: 1)")
    p.add_argument("--top-k", type=checked(int, "at least 1", lambda k: k >= 1), metavar="K",
                   help="sample only from the k most likely tokens")
    p.add_argument("--top-p", type=checked(float, "in (0, 1]", lambda q: 0 < q <= 1), default=1.0,
                   metavar="P", help="sample only from the most likely tokens that together hold "
                   "probability P (default: 1, all)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed; the same seed gives the same text")
    p.add_argument("--stop-at-eot", action="store_true",
                   help="end a sample when it produces <|endoftext|>")
    return p.parse_args(argv)


def read_prompt(args):
    """The prompt text, or None for the default (start of a document)."""
    if args.prompt_file is not None:
        try:
            text = args.prompt_file.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            fail(f"cannot read --prompt-file {args.prompt_file}: {e.strerror}")
    elif args.prompt == "-":
        text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    else:
        text = args.prompt
    if text == "":
        fail("the prompt is empty; give some text, or leave out --prompt to start a new document")
    return text


def write_samples(out, steps, streams, echo, flush):
    """Print the samples one after another, each as `echo` + its text, as tokens arrive.

    steps: iterator of (B,) token arrays (DONE once a sample stopped); streams: a TextStream
    per sample. The sample being printed is written as it grows; the later ones are kept
    until it is finished.
    """
    texts = [[echo] for _ in streams]
    finished = [False] * len(streams)
    shown, written = 0, 0  # samples printed in full; pieces written of the one after them

    def write_ready():
        nonlocal shown, written
        while shown < len(texts):
            out.write("".join(texts[shown][written:]))
            written = len(texts[shown])
            if not finished[shown]:
                return
            out.write("\n" if shown == len(texts) - 1 else "\n" + SEPARATOR)
            shown, written = shown + 1, 0

    def finish(i):
        finished[i] = True
        texts[i].append(streams[i].close())

    for tokens in steps:
        for i, token in enumerate(tokens):
            if finished[i]:
                continue
            if token == DONE:
                finish(i)
            else:
                texts[i].append(streams[i].push(token))
        write_ready()
        if flush:
            out.flush()
    for i in range(len(streams)):
        if not finished[i]:
            finish(i)
    write_ready()
    out.flush()


def run(args):
    text = read_prompt(args) if args.prompt is not None or args.prompt_file is not None else None
    model, tok, tokenizer_dir, _ = load_model_and_tokenizer(args.out_dir, args.checkpoint, args.init_from,
                                                            args.tokenizer)
    if args.stop_at_eot and tok.eot_token is None:
        fail(f"the tokenizer in {tokenizer_dir} has no <|endoftext|> token to stop at; "
             f"leave out --stop-at-eot")
    if text is not None:
        prompt = tok.encode(text, allowed_special="all")
    else:  # a new document: after <|endoftext|>, or after a newline without one
        prompt = [tok.eot_token] if tok.eot_token is not None else tok.encode_ordinary("\n")
    block_size = model.config.block_size

    def note_slide():
        print(f"{PROG}: note: the text is longer than the model's context of {block_size} "
              f"tokens; it sees the last {block_size // 2} to {block_size} from here on",
              file=sys.stderr)

    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    steps = generate(model, prompt, max_new_tokens=args.max_new_tokens, sampler=sampler,
                     rng=np.random.default_rng(args.seed), num_samples=args.num_samples,
                     stop_token=tok.eot_token if args.stop_at_eot else None,
                     n_vocab=tok.n_vocab, on_slide=note_slide)
    streams = [TextStream(tok.decode_bytes) for _ in range(args.num_samples)]
    write_samples(sys.stdout, steps, streams, echo=text or "", flush=sys.stdout.isatty())


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show a character
    try:
        run(args)
    except (checkpoint.CheckpointError, hf.HFError, bpe.VocabError, ValueError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
