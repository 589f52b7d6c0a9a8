"""Serving throughput: requests/s, tokens/s and latency at 1, 4 and 16 concurrent clients,
with continuous batching (--max-batch 16) and one request at a time (--max-batch 1).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_serve.py [--threads 1]

The server is `numpygpt serve` in a process of its own, serving the `shakespeare`
preset (4 layers, width 192, context 128, vocabulary 4096) with random weights: throughput
does not depend on what the weights say. Its tokenizer is byte-level (each byte a token, plus
<|endoftext|>); the model still computes all 4096 logits per token. The clients are asyncio
tasks in this process, each sending its requests one after another with httpx; every request
asks for --max-tokens tokens after a 20-byte prompt (a request drawing <|endoftext|> stops
earlier; tokens/s counts the tokens actually generated, from the responses' usage).
"""
import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(folder):
    """The shakespeare preset with random weights and a byte-level tokenizer, in `folder`."""
    import bpe
    from numpygpt.formats import checkpoint
    from numpygpt.config import preset
    from numpygpt.model import GPT

    tokenizer = bpe.Tokenizer([bytes([b]) for b in range(256)] + [b"<|endoftext|>"], [],
                              {"<|endoftext|>": 256})
    tokenizer.save(folder / "tokenizer")
    model = GPT(preset("shakespeare").with_(dropout=0.0), seed=0)
    checkpoint.save(folder / "out", model, step=0,
                    tokenizer_files=checkpoint.read_tokenizer_files(folder / "tokenizer"))
    return folder / "out"


def start_server(out_dir, max_batch, threads):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if threads:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   NUMBA_NUM_THREADS=str(threads))
    process = subprocess.Popen([sys.executable, "-m", "numpygpt", "serve", "--out-dir", str(out_dir),
                                "--port", "0", "--max-batch", str(max_batch), "--max-queue", "64"],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if " on http://" not in line:
        process.kill()
        sys.exit(f"the server did not start: {line!r}")
    return process, line.split(" on ")[1].split("/ ")[0]


async def run_level(url, clients, requests_per_client, max_tokens):
    """`clients` tasks, each sending its requests in turn -> (wall seconds, latencies, tokens)."""
    import httpx

    latencies, tokens = [], []

    async def client(c, http):
        for r in range(requests_per_client):
            body = {"prompt": f"Client {c:3d}, request {r:2d}:", "max_tokens": max_tokens,
                    "seed": c * 1000 + r}
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/completions", json=body, timeout=600)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()
            tokens.append(response.json()["usage"]["completion_tokens"])

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        await client(-1, http)  # warm-up: compilation, first connection
        latencies.clear()
        tokens.clear()
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        return time.perf_counter() - start, latencies, tokens


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=32, help="requests per level (default: 32)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default: 64)")
    p.add_argument("--threads", type=int, help="BLAS/OpenMP threads of the server (default: "
                   "the libraries' own)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = write_checkpoint(Path(tmp))
        for max_batch, label in ((16, "batched (max batch 16)"), (1, "one at a time")):
            process, url = start_server(out_dir, max_batch, args.threads)
            try:
                for clients in args.clients:
                    per_client = max(1, args.requests // clients)
                    wall, latencies, tokens = asyncio.run(
                        run_level(url, clients, per_client, args.max_tokens))
                    ms = np.percentile(latencies, [50, 99]) * 1000
                    rows.append((label, clients, len(latencies) / wall, sum(tokens) / wall, *ms))
                    print(f"{label:24s} {clients:3d} clients: {rows[-1][2]:6.2f} req/s "
                          f"{rows[-1][3]:7.0f} tok/s  p50 {ms[0]:6.0f} ms  p99 {ms[1]:6.0f} ms",
                          flush=True)
            finally:
                process.terminate()
                process.wait(timeout=60)
    print("\n| server | clients | requests/s | tokens/s | p50 latency | p99 latency |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, clients, rps, tps, p50, p99 in rows:
        print(f"| {label} | {clients} | {rps:.2f} | {tps:.0f} | {p50:.0f} ms | {p99:.0f} ms |")


if __name__ == "__main__":
    main()
