"""Serving throughput: requests/s, tokens/s, latency and time to first token at 1, 4, 16 and
32 concurrent clients, with continuous batching (--max-batch 16) and one request at a time
(--max-batch 1); with --baseline DIR, also the batched server of another checkout (DIR), for a
before/after comparison in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_serve.py [--threads 1] [--baseline DIR]

The server is `numpygpt serve` in a process of its own, serving the `shakespeare`
preset (4 layers, width 192, context 128, vocabulary 4096) with random weights: throughput
does not depend on what the weights say. Its tokenizer is byte-level (each byte a token, plus
<|endoftext|>); the model still computes all 4096 logits per token. The clients are asyncio
tasks in this process, each sending its requests one after another with httpx; every request
asks for --max-tokens tokens after a 20-byte prompt, streamed, so that the time to its first
token is seen (a request drawing <|endoftext|> stops earlier; tokens/s counts the tokens
actually generated, from the streams' usage).
"""
import json
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


def start_server(out_dir, max_batch, threads, repo=REPO_ROOT):
    env = {**os.environ, "PYTHONPATH": str(repo)}
    if threads:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   NUMBA_NUM_THREADS=str(threads))
    process = subprocess.Popen([sys.executable, "-m", "numpygpt", "serve", "--out-dir", str(out_dir),
                                "--port", "0", "--max-batch", str(max_batch), "--max-queue", "64"],
                               cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if " on http://" not in line:
        process.kill()
        sys.exit(f"the server did not start: {line!r}")
    return process, line.split(" on ")[1].split("/ ")[0]


async def run_level(url, clients, requests_per_client, max_tokens):
    """`clients` tasks, each sending its requests in turn -> (wall seconds, latencies, times to
    the first token, tokens)."""
    import httpx

    latencies, first_tokens, tokens = [], [], []

    async def client(c, http):
        for r in range(requests_per_client):
            body = {"prompt": f"Client {c:3d}, request {r:2d}:", "max_tokens": max_tokens,
                    "seed": c * 1000 + r, "stream": True, "stream_options": {"include_usage": True}}
            start, first = time.perf_counter(), None
            async with http.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and first is None:
                        first = time.perf_counter() - start
                    if chunk.get("usage"):
                        tokens.append(chunk["usage"]["completion_tokens"])
            latencies.append(time.perf_counter() - start)
            first_tokens.append(first if first is not None else latencies[-1])

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        await client(-1, http)  # warm-up: compilation, first connection
        latencies.clear()
        first_tokens.clear()
        tokens.clear()
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        return time.perf_counter() - start, latencies, first_tokens, tokens


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--requests", type=int, default=32, help="requests per level (default: 32)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default: 64)")
    p.add_argument("--threads", type=int, help="BLAS/OpenMP threads of the server (default: "
                   "the libraries' own)")
    p.add_argument("--baseline", type=Path, metavar="DIR", help="another checkout whose batched server runs "
                   "too (its checkpoint format must be this one's)")
    args = p.parse_args()
    rows = []
    servers = [(REPO_ROOT, 16, "batched (max batch 16)"), (REPO_ROOT, 1, "one at a time")]
    if args.baseline:
        servers.append((args.baseline.resolve(), 16, f"baseline {args.baseline.name}, batched"))
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = write_checkpoint(Path(tmp))
        for repo, max_batch, label in servers:
            process, url = start_server(out_dir, max_batch, args.threads, repo)
            try:
                for clients in args.clients:
                    per_client = max(1, args.requests // clients)
                    wall, latencies, first_tokens, tokens = asyncio.run(
                        run_level(url, clients, per_client, args.max_tokens))
                    ms = np.percentile(latencies, [50, 99]) * 1000
                    ttft = np.percentile(first_tokens, 50) * 1000
                    rows.append((label, clients, len(latencies) / wall, sum(tokens) / wall, *ms, ttft))
                    print(f"{label:28s} {clients:3d} clients: {rows[-1][2]:6.2f} req/s "
                          f"{rows[-1][3]:7.0f} tok/s  p50 {ms[0]:6.0f} ms  p99 {ms[1]:6.0f} ms  "
                          f"first token p50 {ttft:6.0f} ms", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=60)
    print("\n| server | clients | requests/s | tokens/s | p50 latency | p99 latency | time to first token, p50 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, clients, rps, tps, p50, p99, ttft in rows:
        print(f"| {label} | {clients} | {rps:.2f} | {tps:.0f} | {p50:.0f} ms | {p99:.0f} ms | {ttft:.0f} ms |")


if __name__ == "__main__":
    main()
