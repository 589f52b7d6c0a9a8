"""Generation speed: numpygpt with and without the KV cache, with int8 weights, beside Hugging
Face's GPT-2.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_generate.py [--threads 1]

For each preset, a model with random weights greedily generates tokens after a random prompt
until the context is full (Hugging Face's GPT-2 cannot go past it). Tokens/s counts the new
tokens over the whole call, prompt pass included. When torch and transformers are installed
(`pip install -e ".[bench]" transformers`), the same weights are loaded into
`GPT2LMHeadModel` and timed with `generate(use_cache=True, do_sample=False)` on the same
number of threads; its greedy tokens are compared with ours.

Each library runs in a process of its own, with its own runtime defaults: numpygpt's import
asks OpenMP to wait passively, torch keeps its active waiting. In one process they interfere:
with torch imported first, a numpygpt decoding step of GPT-2 small took 313 ms instead of 21.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def workload(name, prompt_tokens, batch):
    """The preset's model with random weights (the same in every process), a random prompt
    repeated in each row (batch, prompt_tokens), and how many new tokens fill the context."""
    from numpygpt.config import preset
    from numpygpt.model import GPT

    model = GPT(preset(name).with_(dropout=0.0), seed=0)
    c = model.config
    prompt = np.random.default_rng(0).integers(0, c.vocab_size, (1, prompt_tokens))
    prompt = np.repeat(prompt, batch, axis=0)
    return model, prompt, c.block_size - prompt_tokens


def numpygpt_greedy(model, prompt, new_tokens, use_cache):
    """prompt: (B, T) -> (B, new_tokens) greedy tokens."""
    from numpygpt.inference.generate import generate
    from numpygpt.inference.sampling import Sampler

    steps = generate(model, prompt[0], max_new_tokens=new_tokens, sampler=Sampler(temperature=0),
                     rng=None, num_samples=prompt.shape[0], use_cache=use_cache)
    return np.stack(list(steps), axis=1)


def hf_run(args):
    """In its own process: time HF's generate on the preset; print seconds and tokens as JSON."""
    import torch  # first, so that its OpenMP starts with its own defaults
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    model, prompt, new_tokens = workload(args.hf, args.prompt_tokens, args.batch)
    c = model.config
    hf = GPT2LMHeadModel(GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function="gelu_new", layer_norm_epsilon=1e-5))
    # Conv1D stores (in, out) as we do, so the weights copy over by name; a missing qkv bias
    # stays HF's zero bias, and the head is tied to wte.
    state = {f"transformer.{name}": torch.from_numpy(np.array(value))
             for name, value in model.params.values.items()}
    missing = hf.load_state_dict(state, strict=False).missing_keys
    assert all(key.endswith("c_attn.bias") or key == "lm_head.weight" for key in missing), missing
    hf.eval()
    ids = torch.from_numpy(prompt)

    def run():
        with torch.inference_mode():
            out = hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None,
                              attention_mask=torch.ones(ids.shape, dtype=torch.long))
        return out[:, ids.shape[1]:].numpy()

    seconds, tokens = best_time(run, args.repeats)
    print(json.dumps({"seconds": seconds, "tokens": tokens.tolist()}))


def hf_in_subprocess(name, args):
    command = [sys.executable, __file__, "--hf", name, "--threads", str(args.threads),
               "--prompt-tokens", str(args.prompt_tokens), "--batch", str(args.batch),
               "--repeats", str(args.repeats)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], np.array(result["tokens"])


def blas_report():
    """The BLAS that numpy's matmuls call, as threadpoolctl sees it."""
    from threadpoolctl import threadpool_info

    return "; ".join(f"{i['internal_api']} {i.get('version')}, kernel {i.get('architecture')}, "
                     f"{i['num_threads']} threads ({Path(i['filepath']).name})"
                     for i in threadpool_info()
                     if i["user_api"] == "blas" and "numpy" in i["filepath"])


def numpygpt_rows(args):
    import numpygpt  # noqa: F401  first: it sets OpenMP's wait policy before Numba starts it
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")
    have_hf = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
    if not have_hf:
        print("torch/transformers not installed: numpygpt only", file=sys.stderr)
    for name in args.presets:
        model, prompt, new_tokens = workload(name, args.prompt_tokens, args.batch)
        n = args.batch * new_tokens
        cached_s, ours = best_time(lambda: numpygpt_greedy(model, prompt, new_tokens, True),
                                   args.repeats)
        row = dict(preset=name, cached=n / cached_s, uncached=None, hf=None, same=None)
        if not args.skip_int8:
            from numpygpt.inference.quantize import quantize_model
            int8 = quantize_model(workload(name, args.prompt_tokens, args.batch)[0])
            int8_s, tokens8 = best_time(lambda: numpygpt_greedy(int8, prompt, new_tokens, True), args.repeats)
            row["int8"], row["int8_same"] = n / int8_s, f"{(tokens8 == ours).mean():.0%}"
        if not args.skip_uncached:  # slow: one timed run
            uncached_s, ref = best_time(lambda: numpygpt_greedy(model, prompt, new_tokens, False), 1)
            row["uncached"] = n / uncached_s
            assert np.array_equal(ref, ours), "the cache changed the greedy tokens"
        if have_hf:
            hf_s, theirs = hf_in_subprocess(name, args)
            row["hf"] = n / hf_s
            row["same"] = f"{(theirs == ours).mean():.0%}"
        print(row, file=sys.stderr)
        yield row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["shakespeare", "seed"])
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="for BLAS, Numba and torch alike")
    p.add_argument("--skip-uncached", action="store_true", help="skip the slow full-forward runs")
    p.add_argument("--skip-int8", action="store_true", help="skip the runs with int8 weights")
    p.add_argument("--hf", metavar="PRESET", help=argparse.SUPPRESS)  # the HF child process
    args = p.parse_args()
    if args.hf:
        return hf_run(args)

    load_at_start = os.getloadavg()[0]
    rows = list(numpygpt_rows(args))

    def fmt(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    print(f"new tokens after a {args.prompt_tokens}-token prompt until the context is full, "
          f"batch {args.batch}, greedy, float32, best of {args.repeats} (no cache: 1 run); "
          f"1-minute load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} "
          f"at the end")
    print("| preset | batch | threads | numpygpt, KV cache | numpygpt, no cache | numpygpt, int8 | int8 / float32 "
          "| int8 tokens same as float32 | HF generate, use_cache | cache / HF | same greedy tokens as HF |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = None if r["hf"] is None else r["cached"] / r["hf"]
        int8_ratio = None if r.get("int8") is None else r["int8"] / r["cached"]
        print(f"| {r['preset']} | {args.batch} | {args.threads} | {fmt(r['cached'])} | {fmt(r['uncached'])} | "
              f"{fmt(r.get('int8'))} | {fmt(int8_ratio, '.2f')}x | {r.get('int8_same', '-')} | "
              f"{fmt(r['hf'])} | {fmt(ratio, '.2f')}x | {r['same'] or '-'} |")
    print(f"BLAS: {blas_report()}")


if __name__ == "__main__":
    main()
