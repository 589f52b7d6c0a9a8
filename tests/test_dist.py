"""Data-parallel training (numpygpt.dist): the sharding arithmetic and the dropout rows on one
process, then train.py under `mpiexec -n 2` on this machine: 2 ranks x batch B equal 1
process x batch 2B, ZeRO-1 equals the unsharded run, resume, and one failing rank stopping the
job. The MPI tests are skipped when mpi4py or an mpiexec is missing (`pip install .[mpi]`)."""
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

from numpygpt.formats import checkpoint
from numpygpt.training import dist
from numpygpt.layers import Dropout
from numpygpt.optim import AdamW, runs_within
from numpygpt.params import ALIGN, Parameters

# -- sharding arithmetic, on one process --------------------------------------------------------

@pytest.mark.parametrize("n, size", [(4096, 1), (4096, 2), (1000, 3), (48, 5), (16, 4), (0, 2), (123456, 8)])
def test_shard_bounds_cover_the_buffer_in_aligned_near_equal_shards(n, size):
    bounds = dist.shard_bounds(n, size)
    assert len(bounds) == size + 1 and bounds[0] == 0 and bounds[-1] == n
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert all(b % ALIGN == 0 for b in bounds[:-1])
    # Near-equal: no shard exceeds an equal share by more than one alignment block.
    assert max(np.diff(bounds)) <= -(-n // size) + ALIGN


def test_runs_within_cuts_decay_runs_to_a_shard():
    runs = [(0, 32, True), (32, 48, False), (48, 96, True)]
    assert runs_within(runs, 0, 96) == runs
    assert runs_within(runs, 16, 64) == [(0, 16, True), (16, 32, False), (32, 48, True)]
    assert runs_within(runs, 32, 48) == [(0, 16, False)]
    assert runs_within(runs, 64, 96) == [(0, 32, True)]
    assert runs_within(runs, 48, 48) == []


def toy_params(seed=0) -> Parameters:
    params = Parameters({"w": (7, 5), "b": (5,), "e": (9, 3)}, dtype=np.float64)
    rng = np.random.default_rng(seed)
    params.data[...] = rng.normal(size=params.data.size)
    return params


def test_adamw_on_shards_equals_adamw_on_the_whole_buffer():
    """ZeRO-1's update: each shard's AdamW, with the decay runs cut to it, gives the whole one's."""
    whole, sharded = toy_params(), toy_params()
    runs = whole.runs(lambda name, shape: len(shape) == 2)
    full = AdamW(whole, lr=0.1, weight_decay=0.1, decay_runs=runs)
    bounds = dist.shard_bounds(whole.data.size, 3)
    parts = [AdamW(sharded, lr=0.1, weight_decay=0.1, decay_runs=runs, span=(a, b))
             for a, b in itertools.pairwise(bounds)]
    rng = np.random.default_rng(1)
    for _ in range(3):
        whole.grad[...] = sharded.grad[...] = rng.normal(size=whole.grad.size)
        full.step()
        for part in parts:
            part.step()
    np.testing.assert_array_equal(sharded.data, whole.data)
    np.testing.assert_array_equal(np.concatenate([p.m for p in parts]), full.m)


def test_zero_on_one_process_is_plain_adamw():
    """With one rank the shard is the whole buffer: --zero changes nothing, and its state
    loads from and saves to the whole-buffer format."""
    plain_params, zero_params = toy_params(), toy_params()
    comm = dist.Communicator()
    plain = dist.data_parallel_optimizer(comm, plain_params, lr=0.1)
    zero = dist.data_parallel_optimizer(comm, zero_params, zero=True, lr=0.1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        plain_params.grad[...] = zero_params.grad[...] = rng.normal(size=plain_params.grad.size)
        assert plain.step(0.1, grad_clip=1.0) == zero.step(0.1, grad_clip=1.0)
    np.testing.assert_array_equal(zero_params.data, plain_params.data)
    state = zero.state_dict()
    np.testing.assert_array_equal(state["v"], plain.state_dict()["v"])
    zero.load_state_dict(plain.state_dict())
    assert zero.step_count == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 1, 7), (3, 2, 2, 2)])
def test_dropout_rows_are_the_rows_of_the_global_mask(dtype, size, shape):
    """Rank r's dropout output and gradient are rows r*B..(r+1)*B of what one process gets for
    the global batch, and every rank's generator ends where the one process's does."""
    x = np.random.default_rng(1).normal(size=(size * shape[0], *shape[1:])).astype(dtype)
    one = np.random.default_rng(5)
    whole = Dropout(0.3)
    expected = whole.forward(x, one)
    expected_dx = whole.backward(x)
    for rank in range(size):
        rng = np.random.default_rng(5)
        rows = slice(rank * shape[0], (rank + 1) * shape[0])
        layer = Dropout(0.3)
        np.testing.assert_array_equal(layer.forward(x[rows], dist.RankRows(rng, rank)), expected[rows])
        np.testing.assert_array_equal(layer.backward(x[rows]), expected_dx[rows])
        assert rng.bit_generator.state == one.bit_generator.state


def test_one_process_passes_errors_through_unchanged():
    comm = dist.Communicator()
    with pytest.raises(KeyError), comm.fail_together():
        raise KeyError("x")
    with pytest.raises(ValueError), comm.abort_on_error("train.py"):
        raise ValueError("y")


def test_launched_by_mpiexec_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(dist.DistError, match=r"pip install '\.\[mpi\]'"):
        dist.world()


# -- train.py under mpiexec -n 2 ------------------------------------------------------------------

def find_mpiexec() -> str | None:
    """The mpiexec beside this Python (a venv with the mpich wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason="needs mpi4py and an mpiexec: pip install '.[mpi]'")

TINY = ["--model", "tiny", "--block-size", "16", "--eval-iters", "2", "--sample-tokens", "0", "--vocab-size", "300",
        "--dropout", "0.1", "--eval-interval", "2", "--warmup-steps", "2", "--lr-decay-steps", "10"]


@pytest.fixture(scope="module")
def train(data_dir, tmp_path_factory):
    """train(out, *flags, ranks=1) runs train.py (under mpiexec -n ranks when ranks > 1) with
    the tiny settings on The Verdict; returns the CompletedProcess and the out dir."""
    root = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k not in dist.LAUNCHER_SIZE_VARIABLES}
    env.update(PYTHONPATH=str(REPO_ROOT), NUMPYGPT_DATA_DIR=str(root / "data"))

    def train(out, *flags, ranks=1, script=("train.py",), timeout=120):
        launch = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
        argv = [*launch, sys.executable, *script, *TINY, "--data", str(data_dir / "the-verdict.txt"),
                "--out-dir", str(root / out), *flags]
        done = subprocess.run(argv, check=False, cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        return done, root / out
    return train


@pytest.fixture(scope="module")
def runs(train):
    """The runs the equivalence tests compare, each made once: {name: out dir}."""
    plans = {
        "one-f64": ("--batch-size", "8", "--dtype", "float64", "--steps", "10"),
        "two-f64": ("--batch-size", "4", "--dtype", "float64", "--steps", "10", "--check-sync"),
        "zero-f64": ("--batch-size", "4", "--dtype", "float64", "--steps", "10", "--check-sync", "--zero"),
        "one-f32": ("--batch-size", "8", "--steps", "10"),
        "two-f32": ("--batch-size", "4", "--steps", "10", "--check-sync"),
        "zero-f32": ("--batch-size", "4", "--steps", "10", "--check-sync", "--zero"),
    }
    outs = {}
    for name, flags in plans.items():
        done, outs[name] = train(name, *flags, ranks=1 if name.startswith("one") else 2)
        assert done.returncode == 0, done.stderr
    return outs


def metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def max_differences(a: Path, b: Path) -> tuple[float, float]:
    """(largest |difference| of any logged loss or grad norm, of any weight or AdamW moment)."""
    rows_a, rows_b = metrics(a), metrics(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [2, 4, 6, 8, 10]
    keys = ("loss", "grad_norm", "train_loss", "val_loss")
    loss_diff = max(abs(ra[k] - rb[k]) for ra, rb in zip(rows_a, rows_b) for k in keys)
    ca, cb = checkpoint.load(a, "latest", optimizer=True), checkpoint.load(b, "latest", optimizer=True)
    weight_diff = max(float(np.max(np.abs(ca.tensors[n] - cb.tensors[n]))) for n in ca.tensors)
    moment_diff = max(float(np.max(np.abs(ca.optimizer_state[k] - cb.optimizer_state[k]))) for k in ("m", "v"))
    assert ca.train_state["step"] == cb.train_state["step"] == 10
    return loss_diff, max(weight_diff, moment_diff)


@needs_mpi
def test_two_ranks_equal_one_process_with_twice_the_batch_in_float64(runs):
    """Same windows, same dropout masks, gradients averaged: only summation order differs."""
    losses, weights = max_differences(runs["one-f64"], runs["two-f64"])
    assert losses < 1e-12 and weights < 1e-12, (losses, weights)


@needs_mpi
def test_two_ranks_equal_one_process_with_twice_the_batch_in_float32(runs):
    losses, weights = max_differences(runs["one-f32"], runs["two-f32"])
    assert losses < 1e-4 and weights < 1e-5, (losses, weights)


@needs_mpi
def test_zero_equals_the_unsharded_run(runs):
    losses, weights = max_differences(runs["one-f64"], runs["zero-f64"])
    assert losses < 1e-12 and weights < 1e-12, (losses, weights)
    losses, weights = max_differences(runs["two-f32"], runs["zero-f32"])
    assert losses < 1e-6 and weights < 1e-6, (losses, weights)


@needs_mpi
def test_rank_zero_alone_writes_and_prints(runs, train):
    done, out = train("quiet", "--batch-size", "4", "--steps", "2", ranks=2)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("parameters;") == 1 and done.stderr.count("step 2: train loss") == 1
    assert "over 2 ranks" in done.stderr
    assert len(metrics(out)) == 1 and len(list(out.glob("step-*"))) == 1


@needs_mpi
def test_check_sync_notices_ranks_that_differ():
    """The detector the --check-sync runs rely on: here the ranks hold different arrays."""
    code = ("import numpy as np; from numpygpt.training import dist; comm = dist.world()\n"
            "try:\n    comm.check_same(np.arange(4.0) + (comm.rank == 1), 'the weights')\n"
            "except dist.DistError as e:\n    print(e)\n")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", code], check=False, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout.count("the weights differ across ranks (rank 0 vs rank 1)") == 2, done.stdout + done.stderr


@needs_mpi
def test_resume_is_exact_and_crosses_between_sharded_and_unsharded(runs, train):
    """ZeRO checkpoints hold the whole AdamW state: a ZeRO run resumed under ZeRO continues
    exactly, and a one-process checkpoint resumed on 2 ranks with --zero matches one process."""
    flags = ("--dtype", "float64", "--check-sync")
    assert train("zero-split", "--batch-size", "4", "--steps", "6", "--zero", *flags, ranks=2)[0].returncode == 0
    done, out = train("zero-split", "--resume", "--steps", "10", "--zero", *flags, ranks=2)
    assert done.returncode == 0, done.stderr
    assert max_differences(runs["zero-f64"], out) == (0.0, 0.0)

    assert train("one-split", "--batch-size", "8", "--steps", "6", "--dtype", "float64")[0].returncode == 0
    done, out = train("one-split", "--resume", "--steps", "10", "--batch-size", "4", "--zero", *flags, ranks=2)
    assert done.returncode == 0, done.stderr
    losses, weights = max_differences(runs["one-f64"], out)
    assert losses < 1e-12 and weights < 1e-12, (losses, weights)


@needs_mpi
def test_a_failing_rank_stops_every_rank_within_seconds(train):
    start = time.time()
    done, _ = train("fails", "--batch-size", "4", "--steps", "1000", ranks=2,
                    script=("tests/failing_rank.py", "1", "3", "raise"), timeout=60)
    assert done.returncode != 0
    assert "train.py: error: rank 1: injected failure at step 3" in done.stderr
    assert time.time() - start < 30


@needs_mpi
def test_an_error_on_every_rank_is_one_clean_line(runs, train):
    """Setting up fails alike on both ranks (the folder holds a run): one line, exit 2."""
    done, _ = train("one-f64", "--batch-size", "4", "--steps", "2", ranks=2, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("train.py: error:") == 1 and "already holds a checkpoint" in done.stderr


@needs_mpi
def test_a_rank_that_hangs_ends_the_job_at_the_collective_timeout(train):
    """A rank stopped or hung (here: asleep at step 3) would leave the other waiting in its
    next collective forever; the watchdog ends the job on one line after --collective-timeout."""
    start = time.time()
    done, _ = train("hangs", "--batch-size", "4", "--steps", "1000", "--collective-timeout", "4", ranks=2,
                    script=("tests/failing_rank.py", "1", "3", "hang"), timeout=90)
    assert done.returncode != 0
    assert "train.py: error: rank 0: no answer from the other ranks for 4 s in an allgather" in done.stderr
    assert time.time() - start < 60
