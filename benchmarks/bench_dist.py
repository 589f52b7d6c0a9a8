"""Data-parallel training speed and memory: 1 and 2 ranks on this machine, with and without ZeRO-1.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_dist.py [--presets shakespeare small]

For each preset, the same training step the trainer takes (global batch of windows, each rank
its rows, dropout on, one Allreduce of the flat gradient buffer, clip, AdamW), run as:
  1 rank x 2 threads, global batch G     (the whole machine, one process: 2 shards of G/2)
  1 rank x 1 thread,  batch G/2          (one core: the base for the scaling efficiency)
  2 ranks x 1 thread, G/2 per rank       (mpiexec -n 2), plain and with --zero
Reports ms per step, tokens/s, scaling efficiency = tokens/s on N cores / (N x tokens/s of one
1-thread rank with half the batch), the time spent in the step's Allreduce (including the wait
for the slower rank) and the Allreduce alone with the ranks lined up (what overlapping it with
the backward pass could at most save), bytes all-reduced per step, AdamW state and peak RSS
per rank. Each configuration runs in fresh processes so peak RSS is its own; with --repeats
k the configurations take turns k times and each keeps its fastest run (on a shared machine
a neighbour's burst then spoils one turn, not the comparison).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# preset -> global batch (the preset's training batch; small's is halved to keep the run short)
GLOBAL_BATCH = {"tiny": 8, "shakespeare": 16, "small": 8}


def worker(args):
    """One rank's measurement (under mpiexec, or alone): prints rank 0's JSON summary."""
    from numpygpt.training import dist
    from numpygpt.config import preset
    from numpygpt.data import get_batch
    from numpygpt.memory import reuse_freed_memory
    from numpygpt.model import GPT, is_decayed
    from numpygpt.optim import clip_grad_norm
    from numpygpt.training.threads import ThreadShards, shard_count

    reuse_freed_memory()  # as the training loop does
    comm = dist.world()
    config = preset(args.preset)
    model = GPT(config, seed=0)
    params = model.params
    optimizer = dist.data_parallel_optimizer(comm, params, zero=args.zero, lr=1e-4,
                                             decay_runs=params.runs(is_decayed))
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, size=1_000_000).astype(np.uint16)
    data_rng, dropout_rng = np.random.default_rng(1), np.random.default_rng(2)
    batch = args.batch // comm.size
    rows = comm.local_rows(batch)
    shards = shard_count(model, batch)  # a rank with 2 threads cuts its rows in 2, as the trainer does
    runner = ThreadShards(model, shards) if shards > 1 else model

    def step() -> tuple[float, float]:
        comm.allgather(None)  # start together, so the step time is the slowest rank's
        start = time.perf_counter()
        model.zero_grad()
        x, y = get_batch(tokens, args.batch, config.block_size, data_rng, rows)
        comm.mean(runner.loss(x, y, comm.dropout_rng(dropout_rng)))
        runner.backward(1.0 / comm.size)
        reduce_start = time.perf_counter()
        if args.zero:
            optimizer.step(1e-4, 1.0)
            reduce_time = 0.0  # the reduce-scatter and allgather are inside the update
        else:
            comm.allreduce_sum(params.grad)
            reduce_time = time.perf_counter() - reduce_start
            clip_grad_norm(params.grad, 1.0)
            optimizer.optimizer.step(1e-4)
        return time.perf_counter() - start, reduce_time

    for _ in range(args.warmup):
        step()
    times = np.array([step() for _ in range(args.steps)])
    comm.check_same(params.data, "the weights")
    # The Allreduce alone, ranks lined up: its cost without the wait for the slower rank.
    scratch = params.grad.copy()  # pages already touched, so no first-touch faults are timed
    comm.allreduce_sum(scratch)
    comm.allgather(None)
    start = time.perf_counter()
    for _ in range(5):
        comm.allreduce_sum(scratch)
    allreduce_s = (time.perf_counter() - start) / 5
    per_rank = comm.allgather({"optimizer_mb": optimizer.state_bytes / 2**20,
                               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    if comm.rank == 0:
        step_s, reduce_s = np.median(times, axis=0)
        print(json.dumps({"step_s": float(step_s), "reduce_s": float(reduce_s), "allreduce_s": allreduce_s,
                          "parameters": params.count,
                          "grad_bytes": params.grad.nbytes, "tokens_per_step": args.batch * config.block_size,
                          "optimizer_mb": max(r["optimizer_mb"] for r in per_rank),
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in per_rank)}))


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def measure(preset_name, ranks, threads, batch, zero, warmup, steps) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, __file__, "--worker", "--preset", preset_name, "--batch", str(batch),
               "--warmup", str(warmup), "--steps", str(steps)] + (["--zero"] if zero else [])
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks)] + command
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_dist.py: error: {' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["shakespeare", "small"], choices=sorted(GLOBAL_BATCH))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--zero", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    print(f"{os.cpu_count()} cores; timed steps: median of {args.steps} after {args.warmup} warm-up, "
          f"fastest of {args.repeats} turns\n")
    for name in args.presets:
        g = GLOBAL_BATCH[name]
        runs = [("1 rank x 2 threads", 1, 2, g, False), ("1 rank x 1 thread", 1, 1, g // 2, False),
                ("2 ranks x 1 thread", 2, 1, g, False), ("2 ranks x 1 thread, --zero", 2, 1, g, True)]
        results = {}
        for _ in range(args.repeats):
            for label, ranks, threads, batch, zero in runs:
                r = measure(name, ranks, threads, batch, zero, args.warmup, args.steps)
                if label not in results or r["step_s"] < results[label]["step_s"]:
                    results[label] = r
        base = results["1 rank x 1 thread"]
        first = next(iter(results.values()))
        print(f"## {name}: {first['parameters']:,} parameters, {first['grad_bytes'] / 2**20:.1f} MiB "
              f"all-reduced per step (ring: 2(N-1)/N of that sent by each rank)")
        print("| run | per-rank batch | tokens/step | ms/step | tokens/s | scaling efficiency | "
              "Allreduce in step, ms (% of step) | Allreduce alone, ms | AdamW state/rank MiB | peak RSS/rank MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (label, ranks, threads, batch, zero), r in zip(runs, results.values()):
            tokens_per_s = r["tokens_per_step"] / r["step_s"]
            efficiency = tokens_per_s / (ranks * threads * base["tokens_per_step"] / base["step_s"])
            reduce = (f"{r['reduce_s'] * 1e3:.1f} ({100 * r['reduce_s'] / r['step_s']:.1f}%)"
                      if ranks > 1 and not zero else "-")
            alone = f"{r['allreduce_s'] * 1e3:.2f}" if ranks > 1 else "-"
            print(f"| {label} | {batch // ranks} | {r['tokens_per_step']:,} | {r['step_s'] * 1e3:.0f} | "
                  f"{tokens_per_s:,.0f} | {efficiency:.2f} | {reduce} | {alone} | {r['optimizer_mb']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} |")
        print()


if __name__ == "__main__":
    main()
