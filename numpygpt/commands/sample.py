"""Write text with a trained model: temperature, top-k and top-p over a KV cache.

    numpygpt sample --top-p 0.9                          # the best checkpoint in out/
    numpygpt sample --prompt "ROMEO:" --num-samples 3 --max-new-tokens 100 --seed 1
    echo "Once upon a time" | numpygpt sample --prompt - --temperature 0
    numpygpt sample --init-from gpt2 --prompt "Hello"    # GPT-2 from the Hugging Face cache

With no prompt a sample starts a new text: after <|endoftext|> for a model that was trained on
documents separated by it, else after a newline. Text is printed as it is generated when the
output is a terminal; the samples come one after another, the first streamed while the others
are generated with it in the same batch.
"""
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TokenizerError
from ..inference.generate import DONE, TextStream, generate
from ..inference.loading import add_model_arguments, load_model
from ..inference.sampling import Sampler
from ..progress import Progress
from .args import integer, real

SEPARATOR = "---------------\n"


def add_arguments(p):
    add_model_arguments(p, "sampled")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="text to continue; '-' reads it from stdin "
                        "(default: start a new text)")
    prompt.add_argument("--prompt-file", type=Path, metavar="PATH", help="read the prompt from this file")
    p.add_argument("--num-samples", type=integer(1), default=1, metavar="N",
                   help="samples to write, generated together")
    p.add_argument("--max-new-tokens", type=integer(0), default=200, metavar="N",
                   help="tokens to generate per sample")
    p.add_argument("--temperature", type=real(0), default=1.0, metavar="T",
                   help="divides the logits; 0 always picks the most likely token")
    p.add_argument("--top-k", type=integer(1), metavar="K", help="sample only from the k most likely tokens")
    p.add_argument("--top-p", type=real(above=0, high=1), default=1.0, metavar="P",
                   help="sample only from the most likely tokens that together hold probability P (1: all)")
    p.add_argument("--seed", type=integer(0), metavar="N", help="random seed; the same seed gives the same text")
    p.add_argument("--stop-at-eot", action="store_true", help="end a sample when it produces <|endoftext|>")


def read_prompt(args):
    """The prompt text, or None for the default (start of a document)."""
    if args.prompt_file is not None:
        try:
            text = args.prompt_file.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise ConfigError(f"cannot read --prompt-file {args.prompt_file}: {e.strerror}") from None
    elif args.prompt == "-":
        text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    else:
        text = args.prompt
    if text == "":
        raise ConfigError("the prompt is empty; give some text, or leave out --prompt to start a new text")
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
    loaded = load_model(args.out_dir, args.checkpoint, args.init_from, args.tokenizer, args.quantize)
    model, tok = loaded.model, loaded.tokenizer
    progress = Progress()
    progress.message(f"{args.prog}: loaded {loaded.description}")
    if args.stop_at_eot and tok.eot_token is None:
        raise TokenizerError(f"the tokenizer in {loaded.tokenizer_dir} has no <|endoftext|> token to stop at; "
                             "leave out --stop-at-eot")
    prompt = tok.encode(text, allowed_special="all") if text is not None else loaded.document_start()
    block_size = model.config.block_size

    def note_slide():
        progress.message(f"{args.prog}: note: the text is longer than the model's context of {block_size} "
                         f"tokens; it sees the last {block_size // 2} to {block_size} from here on")

    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    steps = generate(model, prompt, max_new_tokens=args.max_new_tokens, sampler=sampler,
                     rng=np.random.default_rng(args.seed), num_samples=args.num_samples,
                     stop_token=tok.eot_token if args.stop_at_eot else None,
                     n_vocab=tok.n_vocab, on_slide=note_slide)
    streams = [TextStream(tok.decode_bytes) for _ in range(args.num_samples)]
    sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show a character
    write_samples(sys.stdout, steps, streams, echo=text or "", flush=sys.stdout.isatty())
