"""Generation speed: numpygpt with and without the KV cache, beside Hugging Face's GPT-2.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_generate.py

For each preset, a model with random weights greedily generates tokens after a random prompt
until the context is full (Hugging Face's GPT-2 cannot go past it). Tokens/s counts the new
tokens over the whole call, prompt pass included. When torch and transformers are installed
(`pip install -e ".[bench]" transformers`), the same weights are loaded into
`GPT2LMHeadModel` and timed with `generate(use_cache=True, do_sample=False)` on the same
number of threads; its greedy tokens are compared with ours.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

try:  # before numpygpt, whose import asks OpenMP to wait passively: torch keeps its defaults
    import torch
    import transformers  # noqa: F401
except ImportError:
    torch = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from numpygpt.config import preset  # noqa: E402
from numpygpt.generate import generate  # noqa: E402
from numpygpt.model import GPT  # noqa: E402
from numpygpt.sampling import Sampler  # noqa: E402


def best_time(run, repeats):
    """The fastest of `repeats` timed calls (after one untimed warm-up): on a shared machine the
    minimum is the measurement least disturbed by other work. Returns (seconds, result)."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def numpygpt_greedy(model, prompt, new_tokens, use_cache):
    """prompt: (B, T) -> (B, new_tokens) greedy tokens."""
    steps = generate(model, prompt[0], max_new_tokens=new_tokens, sampler=Sampler(temperature=0),
                     rng=None, num_samples=prompt.shape[0], use_cache=use_cache)
    return np.stack(list(steps), axis=1)


def hf_model(model):
    """A transformers GPT2LMHeadModel holding `model`'s weights (Conv1D stores (in, out) as we
    do, so no transposes; a missing qkv bias is a zero bias)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function="gelu_new", layer_norm_epsilon=1e-5))
    state = {f"transformer.{name}": torch.from_numpy(np.array(value))
             for name, value in model.params.values.items()}
    missing = hf.load_state_dict(state, strict=False).missing_keys
    assert all(key.endswith("c_attn.bias") or key == "lm_head.weight" for key in missing), missing
    return hf.eval()


def hf_greedy(hf, prompt, new_tokens):
    with torch.inference_mode():
        out = hf.generate(torch.from_numpy(prompt), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                          attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                          pad_token_id=0, eos_token_id=None)
    return out[:, prompt.shape[1]:].numpy()


def blas_report():
    """The BLAS that numpy's matmuls call, as threadpoolctl sees it."""
    return "; ".join(f"{i['internal_api']} {i.get('version')}, kernel {i.get('architecture')}, "
                     f"{i['num_threads']} threads ({Path(i['filepath']).name})"
                     for i in threadpool_info()
                     if i["user_api"] == "blas" and "numpy" in i["filepath"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["shakespeare", "seed"])
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="for BLAS, Numba and torch alike")
    p.add_argument("--skip-uncached", action="store_true", help="the slow full-forward runs")
    args = p.parse_args()

    if torch is None:
        print("transformers/torch not installed: numpygpt only", file=sys.stderr)
    else:
        torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")

    load_at_start = os.getloadavg()[0]
    rows = []
    for name in args.presets:
        model = GPT(preset(name).with_(dropout=0.0), seed=0)
        c = model.config
        new_tokens = c.block_size - args.prompt_tokens
        prompt = np.random.default_rng(0).integers(0, c.vocab_size, (args.batch, args.prompt_tokens))
        n = args.batch * new_tokens

        cached_s, ours = best_time(lambda: numpygpt_greedy(model, prompt, new_tokens, True),
                                   args.repeats)
        row = dict(preset=name, cached=n / cached_s, uncached=None, hf=None, same=None)
        if not args.skip_uncached:  # slow: one timed run
            uncached_s, ref = best_time(lambda: numpygpt_greedy(model, prompt, new_tokens, False), 1)
            row["uncached"] = n / uncached_s
            assert np.array_equal(ref, ours), "the cache changed the greedy tokens"
        if torch is not None:
            hf = hf_model(model)
            hf_s, theirs = best_time(lambda: hf_greedy(hf, prompt, new_tokens), args.repeats)
            row["hf"] = n / hf_s
            row["same"] = f"{(theirs == ours).mean():.0%}"
        rows.append(row)
        print(row, file=sys.stderr)

    def fmt(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    print(f"new tokens after a {args.prompt_tokens}-token prompt until the context is full, "
          f"batch {args.batch}, greedy, float32, best of {args.repeats} (no cache: 1 run); "
          f"1-minute load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
          f"at the end")
    print("| preset | threads | numpygpt, KV cache | numpygpt, no cache | "
          "HF generate, use_cache | cache / HF | same greedy tokens as HF |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = None if r["hf"] is None else r["cached"] / r["hf"]
        print(f"| {r['preset']} | {args.threads} | {fmt(r['cached'])} | {fmt(r['uncached'])} | "
              f"{fmt(r['hf'])} | {fmt(ratio, '.2f')}x | {r['same'] or '-'} |")
    print(f"BLAS: {blas_report()}")


if __name__ == "__main__":
    main()
