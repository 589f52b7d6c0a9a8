"""Shard preparation speed and memory: `numpygpt prepare` on 1 and 2 cores.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_prepare.py --sizes 100 300

For each size, a corpus is generated in a temporary folder (never in the repository) by
repeating the texts in data/ and the Python reference manual (pydoc_data), cut into
documents of about 50 KB at paragraph breaks, in .txt files of 32 MB separated by
<|endoftext|>. Each size is then prepared with GPT-2's vocabulary once per core count, in a
subprocess: on one core it is pinned there with `taskset -c 0` and given --workers 1.

Reported per run: wall time of the whole command (Python start and vocabulary load included),
the command's own MB/s (after start-up, from its last progress line), its CPU time over wall
time ("cores used"), the CPU that every other process used meanwhile (from /proc/stat: the
machine is shared), and the peak resident memory of the subprocess (ru_maxrss from wait4),
which should not grow with the corpus. The runs on 1 and 2 cores must give the same shards.

A shared host's speed drifts by a third from minute to minute, so with --repeat R the core
counts take turns R times and the table shows each one's fastest run (after start-up), and the
ratio of those: the scaling, as far as the host lets it show.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT / "data"
SEP = "<|endoftext|>"
DOCUMENT_CHARS = 50_000
FILE_BYTES = 32 << 20


def source_documents() -> list[str]:
    """The texts in data/ and pydoc_data's topics, cut into documents of about DOCUMENT_CHARS at
    paragraph breaks."""
    from pydoc_data.topics import topics
    texts = [p.read_text(encoding="utf-8") for p in sorted(DATA.glob("*.txt"))]
    texts += [topics[k] for k in sorted(topics)]
    documents, current = [], ""
    for paragraph in "\n\n".join(texts).split("\n\n"):
        current += paragraph + "\n\n"
        if len(current) >= DOCUMENT_CHARS:
            documents.append(current)
            current = ""
    return documents + [current]


def generate_corpus(folder: Path, megabytes: int) -> int:
    """Write at least `megabytes` MB of documents into folder/part_NNNN.txt; returns bytes."""
    documents = [d.encode() for d in source_documents()]
    folder.mkdir(parents=True)
    total, index, sep = 0, 0, SEP.encode()
    while total < megabytes * 1_000_000:
        with open(folder / f"part_{index:04d}.txt", "wb") as f:
            written = 0
            while written < FILE_BYTES and total + written < megabytes * 1_000_000:
                for document in documents:
                    f.write(document + sep)
                    written += len(document) + len(sep)
        total += written
        index += 1
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds spent by all processes since boot (user, nice, system, irq, softirq)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, open("/proc/stat").readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_prepare(corpus: Path, out: Path, cores: int) -> dict:
    """Prepare in a subprocess pinned to `cores` cores; wall s, CLI MB/s, cores used, peak MB."""
    command = [sys.executable, "-m", "numpygpt", "prepare", str(corpus), "--out", str(out),
               "--tokenizer", str(DATA / "gpt2"), "--workers", str(cores)]
    if cores < os.cpu_count():
        command = ["taskset", "-c", ",".join(map(str, range(cores)))] + command
    start, machine_cpu = time.perf_counter(), machine_cpu_seconds()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall, machine_cpu = time.perf_counter() - start, machine_cpu_seconds() - machine_cpu
    if status != 0:
        sys.exit(f"prepare failed:\n{err}")
    rates = re.findall(r"\| ([\d.]+) MB/s \|", err)
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cli_mb_s": float(rates[-1]), "cores": cpu / wall,
            "others": max(machine_cpu - cpu, 0) / wall, "peak_mb": usage.ru_maxrss / 1024}


def shards_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.bin")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 300], help="corpus sizes in MB")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where corpora and shards go")
    p.add_argument("--repeat", type=int, default=1, help="runs per core count, taking turns; the fastest is shown")
    args = p.parse_args()
    if args.repeat < 1 or min(args.sizes) < 1 or min(args.cores) < 1:
        p.error("--sizes, --cores and --repeat take whole numbers of 1 or more")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_prepare-", dir=args.tmp))
    try:
        for size in args.sizes:
            corpus = work / f"corpus-{size}"
            n_bytes = generate_corpus(corpus, size)
            digests, fastest = set(), {}
            for _ in range(args.repeat):
                for cores in args.cores:
                    out = work / f"shards-{size}-{cores}"
                    result = run_prepare(corpus, out, cores)
                    digests.add(shards_digest(out))
                    shutil.rmtree(out)
                    row = {"MB": n_bytes / 1e6, "cores given": cores, **result,
                           "mb_s": n_bytes / 1e6 / result["wall"]}
                    print(row, file=sys.stderr)
                    if cores not in fastest or row["cli_mb_s"] > fastest[cores]["cli_mb_s"]:
                        fastest[cores] = row
            assert len(digests) == 1, "the core counts gave different shards"
            one = fastest[args.cores[0]]["cli_mb_s"]
            rows += [{**row, "scaling": row["cli_mb_s"] / one} for row in fastest.values()]
            shutil.rmtree(corpus)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"fastest of {args.repeat} run(s) per core count")
    print("| corpus MB | cores given | wall s | MB/s (whole command) | MB/s (after start-up) | vs the first "
          "| cores used | other processes (cores) | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['MB']:,.0f} | {r['cores given']} | {r['wall']:.1f} | {r['mb_s']:.1f} | {r['cli_mb_s']:.1f} "
              f"| {r['scaling']:.2f}x | {r['cores']:.2f} | {r['others']:.2f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
