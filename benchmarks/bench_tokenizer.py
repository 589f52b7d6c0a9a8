"""Tokenizer speed: bpe against tiktoken and Hugging Face `tokenizers`, on the same text.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_tokenizer.py

Measures, each as the best of --repeat runs:
- encoding one text on one thread (MB/s of UTF-8), and GPT-2's split regex alone for scale;
- encode_batch on every core, of the text's paragraphs (many small texts) and of the text in
  64 pieces (few large ones), with the CPU time per wall time (2.0: both cores busy);
- training a vocabulary (seconds), bpe.train against tokenizers' BPE trainer.
tiktoken and tokenizers are built offline from GPT-2's encoder.json + vocab.bpe; either is
skipped when not installed. All encoders must give the same ids, or the benchmark stops.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
import regex

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import bpe  # noqa: E402
from bpe.files import text_to_token  # noqa: E402
from bpe.pretokenize import GPT2_PATTERN  # noqa: E402

DATA = REPO_ROOT / "data"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", type=Path, default=DATA / "tinyshakespeare.txt")
    parser.add_argument("--gpt2", type=Path, default=DATA / "gpt2",
                        help="folder with GPT-2's encoder.json + vocab.bpe")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=8192, help="for the training race")
    return parser.parse_args()


def best_of(repeat: int, run) -> tuple[float, object]:
    """(fastest seconds, result) of `repeat` calls of run()."""
    seconds, _, result = timed(repeat, run)
    return seconds, result


def timed(repeat: int, run) -> tuple[float, float, object]:
    """(fastest wall seconds, process CPU seconds of that call, result) of `repeat` calls."""
    best, result = (float("inf"), 0.0), None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best[0], best[1], result


def tiktoken_gpt2(folder: Path):
    """tiktoken's GPT-2 encoding from encoder.json (ranks are the ids), or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    ranks = {text_to_token(text): i for text, i in encoder.items() if text != "<|endoftext|>"}
    return tiktoken.Encoding(name="gpt2-from-files", pat_str=GPT2_PATTERN,
                             mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": encoder["<|endoftext|>"]})


def hf_gpt2(folder: Path):
    """tokenizers' byte-level BPE from encoder.json + vocab.bpe, or None."""
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError:
        return None
    return ByteLevelBPETokenizer(str(folder / "encoder.json"), str(folder / "vocab.bpe"))


def versions() -> str:
    found = [f"python {platform.python_version()}", f"numpy {np.__version__}",
             f"numba {numba.__version__}"]
    for name in ("tiktoken", "tokenizers"):
        try:
            found.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_table(title: str, rows: list[tuple[str, float]], unit: str, baseline: str,
                higher_is_better: bool) -> None:
    print(f"\n{title}")
    print(f"  {'':42} {unit:>9}  vs {baseline.split(' [')[0]}")
    base = dict(rows).get(baseline)
    for name, value in rows:
        ratio = "" if base is None else (f"{value / base:5.2f}x" if higher_is_better
                                         else f"{base / value:5.2f}x faster" if value < base
                                         else f"{value / base:5.2f}x slower")
        print(f"  {name:42} {value:9.2f}  {ratio}")


def bench_encode(args, text: str) -> None:
    mb = len(text.encode("utf-8")) / 1e6
    ours = bpe.load(args.gpt2)
    tik, hf = tiktoken_gpt2(args.gpt2), hf_gpt2(args.gpt2)
    ours.encode_ordinary(text[:1000])  # first call loads the kernels

    single: list[tuple[str, float]] = []
    seconds, _ = best_of(args.repeat, lambda: regex.findall(GPT2_PATTERN, text))
    single.append(("regex.findall (split only)", mb / seconds))
    seconds, expected = best_of(args.repeat, lambda: ours.encode_ordinary(text))
    single.append(("bpe encode_ordinary", mb / seconds))
    if tik:
        seconds, ids = best_of(args.repeat, lambda: tik.encode_ordinary(text))
        assert ids == expected, "tiktoken and bpe disagree"
        single.append(("tiktoken encode_ordinary", mb / seconds))
    if hf:
        seconds, encoding = best_of(args.repeat, lambda: hf.encode(text))
        assert encoding.ids == expected, "tokenizers and bpe disagree"
        single.append(("tokenizers encode", mb / seconds))
    print_table(f"Encoding one text on one thread ({mb:.2f} MB, {len(expected):,} tokens)",
                single, "MB/s", "tiktoken encode_ordinary", True)

    paragraphs = text.split("\n\n")
    step = len(text) // 64 + 1
    pieces = [text[i:i + step] for i in range(0, len(text), step)]
    for docs, what in ((paragraphs, "paragraphs"), (pieces, "pieces")):
        bench_batch(args, ours, tik, hf, docs, f"encode_batch of {len(docs):,} {what}", mb)


def bench_batch(args, ours, tik, hf, docs: list[str], title: str, mb: float) -> None:
    rows: list[tuple[str, float]] = []
    threads = args.threads

    def measure(name, run, check):
        seconds, cpu, result = timed(args.repeat, run)
        assert check(result), f"{name} disagrees with bpe"
        rows.append((f"{name} [{cpu / seconds:.1f} cores]", mb / seconds))

    expected = ours.encode_batch(docs, num_threads=threads)
    same = expected.__eq__
    measure(f"bpe encode_batch ({threads} thr)",
            lambda: ours.encode_batch(docs, num_threads=threads), same)
    measure("bpe encode_batch (1 thr)", lambda: ours.encode_batch(docs, num_threads=1), same)
    if tik:
        measure(f"tiktoken encode_batch ({threads} thr)",
                lambda: tik.encode_ordinary_batch(docs, num_threads=threads), same)
    if hf:
        measure("tokenizers encode_batch (rayon)", lambda: hf.encode_batch(docs),
                lambda encodings: [e.ids for e in encodings] == expected)
    baseline = next((name for name, _ in rows if name.startswith("tiktoken")), "")
    print_table(title, rows, "MB/s", baseline, True)


def bench_train(args, text_path: Path) -> None:
    repeat = max(1, args.repeat // 2)
    bpe.train("warm up the kernels", 300)
    rows: list[tuple[str, float]] = []
    seconds, ours = best_of(repeat, lambda: bpe.train(text_path, args.vocab_size))
    rows.append(("bpe.train", seconds))
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError:
        ByteLevelBPETokenizer = None
    if ByteLevelBPETokenizer:
        def train_hf():
            hf = ByteLevelBPETokenizer()
            hf.train([str(text_path)], vocab_size=args.vocab_size, min_frequency=0,
                     show_progress=False, special_tokens=["<|endoftext|>"])
            return hf
        seconds, hf = best_of(repeat, train_hf)
        rows.append(("tokenizers BpeTrainer", seconds))
        assert hf.get_vocab_size() == ours.n_vocab == args.vocab_size
    print_table(f"Training a {args.vocab_size}-token vocabulary on {text_path.name}", rows,
                "seconds", "tokenizers BpeTrainer", False)


def main() -> None:
    args = parse_args()
    print(f"bench_tokenizer: {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at start; {versions()}")
    print(f"text: {args.text}; best of {args.repeat} runs")
    bench_encode(args, args.text.read_text(encoding="utf-8"))
    bench_train(args, args.text)


if __name__ == "__main__":
    main()
