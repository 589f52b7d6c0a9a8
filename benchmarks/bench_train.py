"""Training speed: numpygpt side by side with PyTorch CPU on the same configs, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py [--presets tiny shakespeare seed]

For each preset: ms per step (forward + backward + AdamW), tokens/s, peak RSS, minor page
faults per timed step, model FLOPs per token and "BLAS share": the model FLOPs per second as
a share of this machine's measured float32 matmul rate (1024^3 through NumPy's BLAS, measured
at the start and after each preset, the fastest so far counting; it is not the hardware's
peak, which the CPU's vector units set higher); the same config in PyTorch
(a minimal GPT-2 in benchmarks/torch_gpt.py, and transformers' GPT2LMHeadModel when installed)
with the same threads, batch and sequence length; then where numpygpt's step time goes.
Each measurement runs in a fresh subprocess so peak RSS is its own; --repeats such processes
per implementation, interleaved, and the fastest of each counts (every process's figure is
printed too), because this VM has spells that slow one whole process by 10-20%.

numpygpt's step cuts the batch into one shard per core (numpygpt.training.threads) as the
trainer does; BENCH_SHARDS=1 in the environment runs the model on the whole batch instead.

--paired ROUNDS then measures numpygpt against the PyTorch GPT-2 in pairs: one live process
each, taking turns of --steps steps, a ratio per round, so both sides of a ratio ran seconds
apart rather than minutes.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
# Importing numpygpt sets its thread-runtime defaults in os.environ (numpygpt.THREAD_DEFAULTS).
# The PyTorch runs must not inherit them, and numpygpt's runs need them before NumPy loads
# OpenBLAS, as `python train.py` has them: so each child gets its environment explicitly.
ORIGINAL_ENV = dict(os.environ)

# preset -> (batch, vocab) used for the benchmark; dropout off so both sides do the same work
CONFIGS = {
    "tiny": dict(batch=8, vocab=512),
    "shakespeare": dict(batch=16, vocab=4096),
    "small": dict(batch=8, vocab=4096),
    "seed": dict(batch=2, vocab=50257),
}


def model_config(preset_name):
    from numpygpt.config import preset
    spec = CONFIGS[preset_name]
    return preset(preset_name).with_(vocab_size=spec["vocab"], dropout=0.0), spec["batch"]


def flops_per_token(config) -> float:
    """Training FLOPs per token: 6 per parameter-token in the matmuls (2 forward, 4 backward),
    plus attention's QK^T and PV: 6 * 2 * n_layer * T * C (Kaplan et al., PaLM appendix B)."""
    c, layers, t, v = config.n_embd, config.n_layer, config.block_size, config.vocab_size
    matmul_params = layers * 12 * c * c + v * c
    return 6 * matmul_params + 12 * layers * t * c


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, warmup, steps, faults=None):
    """Median seconds of `steps` calls after `warmup` ones; faults: a list that gets the
    minor page faults per timed call (memory mapped fresh, rather than reused)."""
    for _ in range(warmup):
        step()
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    if faults is not None:
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps)
    return float(np.median(times))


def numpygpt_step(preset_name, shards=None):
    """One training step of numpygpt (forward, backward, AdamW) as a function of nothing, the
    batch cut into `shards` threads' shares (None: BENCH_SHARDS if set, else as the trainer
    picks them; 1: the model on the whole batch)."""
    from numpygpt.memory import reuse_freed_memory
    from numpygpt.model import GPT
    from numpygpt.optim import AdamW
    from numpygpt.training.threads import ThreadShards, shard_count
    reuse_freed_memory()  # as the training loop does
    config, batch = model_config(preset_name)
    model = GPT(config)
    optimizer = AdamW(model.params, lr=1e-4)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, size=(batch, config.block_size + 1))
    shards = shards or int(os.environ.get("BENCH_SHARDS", 0)) or shard_count(model, batch)
    runner = ThreadShards(model, shards) if shards > 1 else model

    def step():
        model.zero_grad()
        runner.loss(ids[:, :-1], ids[:, 1:])
        runner.backward()
        optimizer.step()
    return step


def run_numpygpt(preset_name, steps, profile):
    step = numpygpt_step(preset_name)
    config, batch = model_config(preset_name)
    faults = []
    result = {"seconds": time_steps(step, 2, steps, faults), "peak_rss_mb": peak_rss_mb(), "faults": faults[0]}
    if profile:  # after the peak is read: the replayed matmuls' arrays are not the model's
        # On the whole batch: cProfile sees only the calling thread, not the shards' threads.
        result["breakdown"] = breakdown(numpygpt_step(preset_name, shards=1), config, batch)
    return result


def matmul_replay(config, batch):
    """A function that makes one step's BLAS calls again, on random arrays of the step's
    shapes and layouts: every Linear forward (x @ W) and backward (x.T @ dout, dout @ W.T),
    the LM head, and attention's six batched products, forward and backward, tile by tile."""
    from numpygpt.layers import ATTENTION_TILE, CausalSelfAttention
    rng = np.random.default_rng(0)
    n, c, v = batch * config.block_size, config.n_embd, config.vocab_size
    h, t = config.n_head, config.block_size
    d = c // h
    r = lambda *shape: rng.random(shape, dtype=np.float32)
    linears = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)] * config.n_layer + [(c, v)]
    arrays = [(r(n, i), r(i, o), r(n, o)) for i, o in linears]
    q, k, att = r(batch, h, t, d), r(batch, h, t, d), r(batch, h, t, t)
    # The attention products tile by tile, as CausalSelfAttention makes them: query tiles
    # against the keys up to their end, and (backward) key tiles against the later queries.
    query_tiles = CausalSelfAttention.tiles(SimpleNamespace(tile=ATTENTION_TILE), t)
    key_tiles = [(rows, slice(rows.start, t)) for rows, _ in query_tiles]

    def work():
        for x, w, dout in arrays:
            x @ w
            x.T @ dout
            dout @ w.T
        for _ in range(config.n_layer):
            for rows, keys in query_tiles:
                for _ in range(2):  # S = Q K^T and dA = dY V^T; Y = A V and dQ = dS K
                    q[:, :, rows] @ k[:, :, keys].swapaxes(-1, -2)
                    att[:, :, rows, keys] @ k[:, :, keys]
            for keys, rows in key_tiles:
                for _ in range(2):  # dV = A^T dY and dK = dS^T Q
                    att[:, :, rows, keys].swapaxes(-1, -2) @ q[:, :, rows]
    return work


def breakdown(step, config, batch, rounds=3):
    """Where one step's time goes: BLAS (the step's matmuls replayed), each Numba kernel
    (cProfile sees their dispatchers), and the rest: NumPy copies and elementwise work, dropout
    masks, Python. Each round times a step and then the replay, seconds apart, and the BLAS
    share is the median round's: the host's speed drifts too much between minutes for a step
    and a replay timed apart to be compared."""
    import cProfile
    import pstats
    replay = matmul_replay(config, batch)
    replay()
    profiler = cProfile.Profile()
    totals, blas_shares = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        profiler.enable()
        step()
        profiler.disable()
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        replay()
        blas_shares.append((time.perf_counter() - start) / totals[-1])
    groups = {}
    for (file, _, name), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
        if file.endswith("kernels.py"):
            groups[f"kernel {name}"] = groups.get(f"kernel {name}", 0.0) + tottime / sum(totals)
    groups["BLAS matmuls"] = float(np.median(blas_shares))
    groups["other (NumPy copies, dropout, Python)"] = max(1.0 - sum(groups.values()), 0.0)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def torch_step(preset_name, kind):
    """One training step of the PyTorch GPT-2 (kind "torch") or transformers' ("hf")."""
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    config, batch = model_config(preset_name)
    if kind == "hf":
        import transformers
        hf_config = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                            n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = transformers.GPT2LMHeadModel(hf_config)
        forward = lambda x, y: model(x, labels=y).loss
    else:
        from torch_gpt import TorchGPT
        model = TorchGPT(config)
        forward = model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False, foreach=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, config.block_size + 1), generator=g)
    # transformers shifts the labels itself, so it takes the same T tokens as input and labels
    x, y = (ids[:, :-1], ids[:, :-1]) if kind == "hf" else (ids[:, :-1], ids[:, 1:])

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward(x, y).backward()
        optimizer.step()
    return step


def run_torch(preset_name, steps, kind):
    step = torch_step(preset_name, kind)
    faults = []
    return {"seconds": time_steps(step, 2, steps, faults), "peak_rss_mb": peak_rss_mb(), "faults": faults[0]}


def matmul_gflops() -> float:
    """This machine's float32 matmul rate through NumPy's BLAS (1024^3, median of 10)."""
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    seconds = time_steps(lambda: a @ a, 3, 10)
    return 2 * 1024 ** 3 / seconds / 1e9


def child(args):
    """One measurement in this process: print a JSON line with the result and peak RSS."""
    if args.impl == "numpygpt":
        result = run_numpygpt(args.preset, args.steps, args.profile)
    else:
        sys.path.insert(0, str(HERE))
        result = run_torch(args.preset, args.steps, args.impl)
    print(json.dumps(result))


def step_server(args):
    """A long-lived measurement: build the step, warm it up, say "ready", then for each line
    k on stdin time k steps and print their seconds as a JSON list (see `paired`)."""
    if args.impl == "numpygpt":
        step = numpygpt_step(args.preset)
    else:
        sys.path.insert(0, str(HERE))
        step = torch_step(args.preset, args.impl)
    for _ in range(2):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        print(json.dumps(times), flush=True)


def child_env(impl):
    """numpygpt's children run with its thread defaults, as `python train.py` does; the
    PyTorch ones in the caller's environment untouched."""
    env = dict(ORIGINAL_ENV)
    if impl == "numpygpt":
        import numpygpt
        env = {**numpygpt.THREAD_DEFAULTS, **env}
    return env


def paired(preset_name, impls, rounds, steps):
    """numpygpt / each other implementation's speed, measured in pairs: one process per
    implementation stays alive, and they take turns, `steps` steps each, for `rounds` rounds;
    each round gives a ratio of median step times. The host's speed drifts by a third from one
    minute to the next, so a ratio of two steps seconds apart is steadier than one of two
    processes' fastest runs minutes apart. Returns {impl: [ratio per round]}."""
    procs = {}
    try:
        for impl in impls:
            cmd = [sys.executable, __file__, "--serve", "--impl", impl, "--preset", preset_name]
            procs[impl] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, env=child_env(impl))
            if procs[impl].stdout.readline().strip() != "ready":  # warmed up: the next starts
                raise RuntimeError(f"{impl}: {(procs[impl].stderr.read().strip().splitlines() or ['failed'])[-1]}")
        ratios = {impl: [] for impl in impls[1:]}
        for round_ in range(rounds):
            medians = {}
            # Who goes first alternates, so neither side always follows the other's idle threads.
            for impl in (impls if round_ % 2 == 0 else impls[::-1]):
                time.sleep(0.05)  # the other process's spinning threads go to sleep
                procs[impl].stdin.write(f"{steps}\n")
                procs[impl].stdin.flush()
                medians[impl] = float(np.median(json.loads(procs[impl].stdout.readline())))
            for impl in ratios:
                ratios[impl].append(medians[impl] / medians["numpygpt"])
        return ratios
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()


def measure(preset_name, impl, steps, profile=False):
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--preset", preset_name, "--steps", str(steps)]
    if profile:
        cmd.append("--profile")
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(impl))
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fastest(results):
    """The fastest successful run, with the breakdown of whichever run profiled."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    for r in ok:
        if "breakdown" in r:
            best["breakdown"] = r["breakdown"]
    return best


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}"
                         for i in threadpool_info())
    except ImportError:
        return "threadpoolctl not installed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "shakespeare", "seed"], choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per implementation, interleaved; the fastest counts "
                             "(this VM has spells that slow a whole process by 10-20%%)")
    parser.add_argument("--paired", type=int, default=0, metavar="ROUNDS",
                        help="then, per preset, ROUNDS rounds of numpygpt and torch taking turns "
                             "(--steps steps each, both processes alive): the median ratio of the pairs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="numpygpt", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.serve:
        return step_server(args)
    if args.steps < 1 or args.repeats < 1 or args.paired < 0:
        parser.error("--steps and --repeats must be at least 1, --paired at least 0")

    rates = [matmul_gflops()]
    print(f"machine: {os.cpu_count()} cores; float32 matmul {rates[0]:.0f} GFLOP/s; BLAS: {blas_info()}")
    try:
        import torch
        impls = ["torch"] + (["hf"] if __import__("importlib").util.find_spec("transformers") else [])
        print(f"torch {torch.__version__}, {os.environ.get('BENCH_THREADS', os.cpu_count())} threads")
    except ImportError:
        impls = []
        print("torch not installed: numpygpt alone")
    header = (f"{'preset':<12}{'impl':<10}{'ms/step':>9}{'tok/s':>9}{'RSS MB':>8}{'faults':>8}{'GFLOP/s':>9}"
              f"{'BLAS share':>11}{'tok/s ratio':>12}{'RSS ratio':>10}")
    print(header)
    breakdowns, spreads = {}, {}
    for name in args.presets:
        config, batch = model_config(name)
        tokens = batch * config.block_size
        runs = {impl: [] for impl in ["numpygpt"] + impls}
        for repeat in range(args.repeats):
            for impl in runs:
                runs[impl].append(measure(name, impl, args.steps, profile=(impl == "numpygpt" and repeat == 0)))
        # The host's speed drifts: the rate measured again after each preset, its fastest so
        # far being what the shares divide by (a slow first measurement gave shares over 100%).
        rates.append(matmul_gflops())
        peak = max(rates)
        rows = {impl: fastest(results) for impl, results in runs.items()}
        spreads[name] = {impl: [r["seconds"] * 1000 for r in results if "error" not in r] for impl, results in runs.items()}
        ours = rows["numpygpt"]
        breakdowns[name] = ours.pop("breakdown", {})
        for impl, r in rows.items():
            if "error" in r:
                print(f"{name:<12}{impl:<10}  failed: {r['error']}")
                continue
            tps = tokens / r["seconds"]
            gflops = tps * flops_per_token(config) / 1e9
            ratio = (tokens / ours["seconds"]) / tps if impl != "numpygpt" else 1.0
            rss_ratio = ours["peak_rss_mb"] / r["peak_rss_mb"]
            print(f"{name:<12}{impl:<10}{r['seconds'] * 1000:>9.1f}{tps:>9.0f}{r['peak_rss_mb']:>8.0f}"
                  f"{r['faults']:>8.0f}{gflops:>9.1f}{gflops / peak:>11.0%}{ratio:>12.2f}{rss_ratio:>10.2f}")
    print("\n(tok/s ratio and RSS ratio: numpygpt / that row; each row is the fastest of "
          f"{args.repeats} processes; faults: minor page faults per timed step; BLAS share: model "
          "FLOP/s over the fastest matmul rate measured so far, not over the hardware's peak)")
    print(f"float32 matmul rate, measured at the start and after each preset: "
          + ", ".join(f"{r:.0f}" for r in rates) + " GFLOP/s")
    print("\nms/step of every process:")
    for name, per_impl in spreads.items():
        print(f"  {name}: " + "; ".join(f"{impl} " + " ".join(f"{ms:.1f}" for ms in v) for impl, v in per_impl.items()))
    print("\nwhere numpygpt's step time goes (the model on the whole batch, one shard):")
    for name, groups in breakdowns.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.0%}" for k, v in groups.items()))
    if args.paired and "torch" in impls:
        print(f"\nin pairs: numpygpt and torch taking turns, {args.steps} steps each, {args.paired} rounds; "
              "tokens/s ratio numpygpt / torch per round")
        for name in args.presets:
            try:
                ratios = paired(name, ["numpygpt", "torch"], args.paired, args.steps)["torch"]
            except RuntimeError as error:
                print(f"  {name}: failed: {error}")
                continue
            print(f"  {name}: median {np.median(ratios):.2f}x, range {min(ratios):.2f}x-{max(ratios):.2f}x: "
                  + " ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
