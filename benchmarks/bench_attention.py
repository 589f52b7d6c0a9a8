"""Causal attention, one layer's forward + backward, cut into tiles of query rows against the
whole (T, T) square, for each preset's training shape, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_attention.py [--tiles 32 64 128]

A tile of T rows or more is the whole square: every product over all T x T scores. Smaller
tiles skip the blocks above the diagonal (CausalSelfAttention.tiles) in more, smaller BLAS
calls. Dropout 0.1 as in training. The tile sizes take turns, --repeats calls each after two warm-up
rounds; the fastest call of each counts (the ratio), the median is printed beside it.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpygpt  # noqa: F401  (its thread defaults, before NumPy loads BLAS)
from numpygpt.config import preset
from numpygpt.layers import CausalSelfAttention
from numpygpt.memory import reuse_freed_memory
from numpygpt.params import Parameters

# preset -> training batch, as benchmarks/bench_train.py runs them (gpt2: context 1024, batch 1)
BATCH = {"shakespeare": 16, "small": 8, "seed": 2, "gpt2": 1}


def call(layer, x, dout, rng, tile):
    layer.tile = tile
    start = time.perf_counter()
    layer.forward(x, rng)
    layer.backward(dout)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(BATCH), choices=list(BATCH))
    parser.add_argument("--tiles", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if min(args.tiles) < 1 or args.repeats < 1:
        parser.error("--tiles and --repeats take whole numbers of 1 or more")
    reuse_freed_memory()  # as training does: no page faults in the timed calls
    try:
        from threadpoolctl import threadpool_info
        print("BLAS:", "; ".join(f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
                                 f"x{i['num_threads']}" for i in threadpool_info()))
    except ImportError:
        pass
    print(f"{'preset':12} {'B,T,C,H':16} {'tile':>6} {'min ms':>8} {'median':>8} {'vs whole':>9}")
    for name in args.presets:
        config = preset(name).with_(dropout=0.1)
        b, t, c, h = BATCH[name], config.block_size, config.n_embd, config.n_head
        params = Parameters(CausalSelfAttention.shapes("attn", c, config.qkv_bias), dtype=np.float32)
        rng = np.random.default_rng(0)
        params.data[:] = rng.normal(0.0, 0.02, params.data.size)
        layer = CausalSelfAttention(params, "attn", h, config.dropout, qkv_bias=config.qkv_bias)
        x = rng.normal(size=(b, t, c)).astype(np.float32)
        dout = rng.normal(size=(b, t, c)).astype(np.float32)
        tiles = [t] + [tile for tile in args.tiles if tile < t]
        times = {tile: [] for tile in tiles}
        for repeat in range(args.repeats + 2):  # interleaved, so a slow spell slows them all
            for tile in tiles:
                seconds = call(layer, x, dout, rng, tile)
                if repeat >= 2:
                    times[tile].append(seconds)
        whole = min(times[t])
        for tile in tiles:
            label = "whole" if tile == t else str(tile)
            best = min(times[tile])
            print(f"{name if tile == t else '':12} {f'{b},{t},{c},{h}' if tile == t else '':16} {label:>6} "
                  f"{best * 1e3:8.2f} {np.median(times[tile]) * 1e3:8.2f} {whole / best:8.2f}x")

if __name__ == "__main__":
    main()
