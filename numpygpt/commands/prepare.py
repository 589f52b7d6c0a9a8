"""Tokenize a corpus of any size into shards for `numpygpt train --data DIR`, on every core.

    numpygpt prepare corpus/ --out data/shards        # GPT-2's vocabulary (shipped in data/gpt2)
    numpygpt prepare web.jsonl.zst --out shards --tokenizer out/step-002000/tokenizer
    numpygpt train --data data/shards

The input is a .txt or .jsonl file (a "text" field per line), or a folder of them; also .gz,
or .zst with the zstandard package. Documents are joined with <|endoftext|> between them. Run
the same command again to resume an interrupted preparation: it gives the same bytes.
"""
from ..data.corpus import Corpus
from ..data.shards import SPLITS, Preparation, ShardSettings
from ..data.tokenizers import tokenizer_folder
from ..progress import Progress
from .args import folder, integer, real


def add_arguments(p):
    defaults = ShardSettings()
    p.add_argument("input", help="a .txt or .jsonl file, or a folder of them")
    p.add_argument("--out", required=True, type=folder, metavar="DIR", help="folder for the shards and manifest.json")
    p.add_argument("--tokenizer", default="gpt2", metavar="SPEC",
                   help="gpt2 or a folder with encoder.json + vocab.bpe")
    p.add_argument("--shard-tokens", type=integer(1), default=defaults.shard_tokens, metavar="N",
                   help="token ids per shard")
    p.add_argument("--val-fraction", type=real(0, 0.999), default=defaults.val_fraction, metavar="F",
                   help="share of documents for validation")
    p.add_argument("--seed", type=integer(0), default=defaults.seed, metavar="N",
                   help="decides which documents are validation")
    p.add_argument("--workers", type=integer(1), metavar="N", help="encoding threads (default: every core)")


def run(args):
    settings = ShardSettings(args.shard_tokens, args.val_fraction, args.seed)
    corpus = Corpus(args.input)  # first: a missing input is the likelier mistake
    tokenizer_dir = tokenizer_folder(args.tokenizer)
    try:
        manifest = Preparation(corpus, tokenizer_dir, args.out, settings, args.workers).run()
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted; run the same command again to resume") from None
    counts = {split: (sum(s["tokens"] for s in manifest["shards"] if s["split"] == split),
                      sum(s["split"] == split for s in manifest["shards"]),
                      manifest["cursor"]["documents"][split]) for split in SPLITS}
    say = Progress().message
    say("; ".join(f"{split}: {tokens:,} tokens in {n} shard{'s' * (n != 1)} from {docs:,} documents"
                  for split, (tokens, n, docs) in counts.items()))
    if not counts["val"][2]:  # train --data needs a validation split to evaluate on
        say("note: no document went to validation, which training needs; split the text into more documents "
            "(files, <|endoftext|>, or .jsonl lines) or raise --val-fraction, in a new --out folder")
    else:
        say(f"train with: numpygpt train --data {args.out}")

