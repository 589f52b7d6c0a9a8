"""train.py end to end on tiny data: learning, checkpoints, exact resume, and every bad input
giving one clear error line without touching an existing checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import train
from numpygpt.formats import checkpoint
from conftest import REPO_ROOT

# A 2-layer model and a 300-token BPE learnt on the text: a step takes milliseconds.
TINY = ["--model", "tiny", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2",
        "--sample-tokens", "0", "--vocab-size", "300"]


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Token caches and downloads go to a temporary data folder, never the repository's."""
    monkeypatch.setenv("NUMPYGPT_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def verdict(data_dir):
    return str(data_dir / "the-verdict.txt")


@pytest.fixture
def run(verdict, tmp_path):
    """train.main with the tiny settings on The Verdict; returns (exit code, out dir)."""
    def run(*flags, out="out", data=verdict):
        out_dir = tmp_path / out
        base = TINY
        if "--resume" in flags or "--tokenizer" in flags:  # the run's own, or the one given
            base = TINY[:TINY.index("--vocab-size")] + TINY[TINY.index("--vocab-size") + 2:]
        argv = base + ["--data", data, "--out-dir", str(out_dir), *flags]
        return train.main(argv), out_dir
    return run


def losses(out_dir):
    return [(r["step"], r["loss"]) for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())]


def test_training_learns_and_saves_a_checkpoint(run, gpt2_dir):
    """With GPT-2's vocabulary, from a folder: the loss falls, and the checkpoint carries it all."""
    code, out = run("--steps", "40", "--eval-interval", "20", "--lr", "3e-3", "--tokenizer", str(gpt2_dir),
                    "--sample-tokens", "5")
    assert code == 0
    evals = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
    assert evals[-1]["train_loss"] < evals[0]["train_loss"] - 0.5
    ckpt = checkpoint.load(out, "latest", optimizer=True)
    assert ckpt.train_state["step"] == 40 and ckpt.optimizer_state["step"] == 40
    assert (ckpt.tokenizer_dir / "encoder.json").read_bytes() == (gpt2_dir / "encoder.json").read_bytes()
    assert checkpoint.load(out, "best").path.exists()


def test_same_seed_gives_the_same_losses_bit_for_bit(run, tmp_path):
    assert run("--steps", "10", "--eval-interval", "5", "--dropout", "0.1", out="a")[0] == 0
    assert run("--steps", "10", "--eval-interval", "5", "--dropout", "0.1", out="b")[0] == 0
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_resume_is_exact(run, tmp_path):
    """20 steps straight == 10 steps, stop, --resume, 10 more: same losses and same weights."""
    flags = ["--eval-interval", "5", "--lr-decay-steps", "20", "--dropout", "0.1"]
    assert run("--steps", "20", *flags, out="straight")[0] == 0
    assert run("--steps", "10", *flags, out="split")[0] == 0
    assert run("--steps", "20", "--resume", out="split")[0] == 0
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert losses(straight) == losses(split)
    a, b = (checkpoint.load(folder, "latest", optimizer=True) for folder in (straight, split))
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name])
    np.testing.assert_array_equal(a.optimizer_state["m"], b.optimizer_state["m"])


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("train.py: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "argument --steps: must be an integer 1 or more, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer 1 or more, got 0"),
    (["--block-size", "4096"], "fewer than one window"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "argument --lr: must be a number 0 or more, got nan"),
    (["--min-lr", "-1"], "argument --min-lr: must be a number 0 or more, got -1"),
    (["--min-lr", "0.5"], "--min-lr must be in 0..lr"),
    (["--grad-clip", "nan"], "argument --grad-clip: must be a number 0 or more, got nan"),
    (["--lr-decay-steps", "0"], "argument --lr-decay-steps: must be an integer 1 or more, got 0"),
    (["--beta2", "1"], "--beta2 must be in [0, 1)"),
    (["--n-head", "3"], "multiple of n_head"),
])
def test_nonsense_flags(run, capsys, flags, message):
    code, _ = run("--steps", "1", *flags)
    assert code == 2 and message in error_line(capsys)


def test_bad_data(run, tmp_path, capsys):
    missing = tmp_path / "missing.txt"
    assert run("--steps", "1", data=str(missing))[0] == 2
    assert "data not found" in error_line(capsys)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert run("--steps", "1", data=str(empty))[0] == 2
    assert "holds no text" in error_line(capsys)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    assert run("--steps", "1", data=str(binary))[0] == 2
    assert "not UTF-8" in error_line(capsys)
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 3)
    assert run("--steps", "1", data=str(short))[0] == 2
    assert "fewer than one window" in error_line(capsys)
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert run("--steps", "1", data=str(folder))[0] == 2
    assert "no .txt or .jsonl files" in error_line(capsys)


def test_existing_checkpoint_is_never_overwritten(run, capsys):
    code, out = run("--steps", "5", "--eval-interval", "5")
    assert code == 0
    before = (out / "checkpoint.json").read_text()
    capsys.readouterr()
    assert run("--steps", "5")[0] == 2
    assert "already holds a checkpoint" in error_line(capsys)
    assert (out / "checkpoint.json").read_text() == before


def test_a_new_run_never_writes_over_a_file_of_ones_own(run, tmp_path, capsys):
    """An out-dir's metrics.jsonl that the trainer did not write is refused and kept; one a
    run left before its first checkpoint is replaced, its steps not mixed with the new run's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text("my own notes\n")
    assert run("--steps", "2")[0] == 2
    assert "is not a training log of numpygpt" in error_line(capsys)
    assert (out / "metrics.jsonl").read_text() == "my own notes\n"
    (out / "metrics.jsonl").write_text('{"step": 0, "loss": 9.0}\n{"step": 10, "loss": 8.0}\n{"step": 20, "lo')
    code, out = run("--steps", "4", "--log-interval", "2", "--eval-interval", "4")
    assert code == 0
    assert [step for step, _ in losses(out)] == [2, 4]
    assert all(loss != 9.0 for _, loss in losses(out))


def test_an_empty_out_dir_is_refused(run, tmp_path, capsys):
    assert train.main(TINY + ["--out-dir", ""]) == 2
    assert "--out-dir: expected a folder, got an empty path" in capsys.readouterr().err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_flags_a_run_cannot_take_are_refused_not_ignored(run, gpt2_dir, capsys):
    code, out = run("--steps", "3", "--eval-interval", "3")
    assert code == 0
    capsys.readouterr()
    for flags, message in [(["--model", "small"], "--model small does not match the run's model (tiny)"),
                           (["--vocab-size", "500"], "--vocab-size 500 does not match the run's 300"),
                           (["--tokenizer", str(gpt2_dir)], "is not the run's own: a resumed run keeps its tokenizer")]:
        assert run("--steps", "6", "--resume", *flags)[0] == 2
        assert message in error_line(capsys)
    assert run("--steps", "6", "--resume", "--vocab-size", "300")[0] == 0  # the run's own: fine
    assert run("--steps", "2", "--tokenizer", str(gpt2_dir), "--vocab-size", "600", out="other")[0] == 2
    assert "--vocab-size sizes a BPE learnt with --tokenizer train" in error_line(capsys)


def test_resume_errors(run, tmp_path, capsys):
    assert run("--steps", "5", "--resume", out="nothing")[0] == 2
    assert "train one first (numpygpt train)" in error_line(capsys)
    code, out = run("--steps", "5", "--eval-interval", "5")
    assert code == 0
    capsys.readouterr()
    assert run("--steps", "10", "--resume", "--n-layer", "3")[0] == 2
    assert "does not match the checkpoint" in error_line(capsys)
    assert run("--steps", "10", "--resume", "--block-size", "64")[0] == 2  # over the model's context
    assert "--block-size 64 does not match the checkpoint's 16" in error_line(capsys)
    model_file = checkpoint.resolve(out) / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    assert run("--steps", "10", "--resume")[0] == 2
    assert "model.safetensors is damaged" in error_line(capsys)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(run, capsys):
    code, out = run("--steps", "5", "--eval-interval", "5")
    assert code == 0
    kept = (out / "checkpoint.json").read_text()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow warnings would be noise
        code, _ = run("--steps", "40", "--resume", "--lr", "1e9", "--grad-clip", "0", "--warmup-steps", "0")
    assert code == 2
    line = error_line(capsys)
    assert "loss became" in line and "step-000005" in line and "--grad-clip 1.0" in line
    assert (out / "checkpoint.json").read_text() == kept
    code, _ = run("--steps", "40", "--resume", "--lr", "1e30", "--warmup-steps", "0")
    line = error_line(capsys)
    assert code == 2 and "loss became" in line and "Try a lower --lr" in line and "--grad-clip" not in line


def test_ctrl_c_saves_and_exits_cleanly(verdict, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "NUMPYGPT_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *TINY, "--data", verdict,
                             "--out-dir", str(out), "--steps", "100000"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:  # training has begun
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    step = checkpoint.load(out).train_state["step"]
    assert step >= 10


def test_early_stop_ends_the_run_after_k_evaluations_without_improvement(run, monkeypatch, capsys):
    """Validation losses 5, 4, 4.5, 4.2, 4.1, ...: with --early-stop 2 the run ends after the
    third and fourth evaluations fail to beat 4, at step 4 x 5; best stays the step-10 one."""
    from numpygpt.training.trainer import Trainer
    losses = iter([5.0, 4.0, 4.5, 4.2, 4.1, 4.0, 3.9, 3.8])

    def evaluate(self):
        loss = next(losses)
        return {"train_loss": loss, "val_loss": loss, "train_ppl": 1.0, "val_ppl": 1.0, "val_bpb": loss / 2}
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    code, out = run("--steps", "40", "--eval-interval", "5", "--early-stop", "2")
    assert code == 0
    assert "early stop at step 20: the validation loss has not fallen below 4.0000 in 2 evaluations" in \
        capsys.readouterr().err
    assert checkpoint.load(out, "latest").train_state["step"] == 20
    best = checkpoint.load(out, "best")
    assert best.train_state["step"] == 10 and best.train_state["evaluation"]["val_loss"] == 4.0
    assert checkpoint.load(out).path == best.path  # what sample, serve and export load


def documents_corpus(folder, n=60):
    """Many short documents, so a tiny model soon learns that each ends with <|endoftext|>."""
    folder.mkdir()
    texts = ["the cat sat on the mat.", "a dog ran in the park."]
    (folder / "docs.txt").write_text("<|endoftext|>".join(texts[i % 2] for i in range(n)))
    return texts


def test_a_model_trained_on_documents_starts_from_endoftext_and_stops_at_it(tmp_path):
    """Trained on a stream of documents separated by <|endoftext|>, the model starts a new
    text from that token, and both `sample --stop-at-eot` and the server stop where a
    document ends (not at max tokens)."""
    texts = documents_corpus(tmp_path / "docs")
    out = tmp_path / "out"
    code = train.main(["--model", "tiny", "--block-size", "16", "--batch-size", "8", "--eval-iters", "2",
                       "--sample-tokens", "0", "--vocab-size", "300", "--steps", "150", "--eval-interval", "150",
                       "--lr", "3e-3", "--data", str(tmp_path / "docs"), "--out-dir", str(out)])
    assert code == 0
    assert checkpoint.load(out).train_state["trained_on_eot"] is True
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "sample.py"), "--out-dir", str(out), "--temperature", "0",
                           "--stop-at-eot", "--max-new-tokens", "50"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in texts

    from numpygpt.inference.loading import load_model
    from numpygpt.inference.sampling import Sampler
    from numpygpt.serve.scheduler import Engine, Request
    loaded = load_model(out)
    assert loaded.document_start() == [loaded.tokenizer.eot_token]
    pieces = []
    engine = Engine(loaded.model, loaded.tokenizer, max_batch=2).start()
    try:
        request = Request(prompt=loaded.document_start(), max_tokens=50, sampler=Sampler(temperature=0),
                          on_piece=pieces.append, n=1)
        engine.submit([request])
        deadline = time.time() + 60
        while not any(p.finish_reason for p in pieces) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        engine.close()
    assert pieces[-1].finish_reason == "stop" and pieces[-1].completion_tokens < 50
    assert "".join(p.text for p in pieces).strip() in texts


def test_a_model_trained_on_one_document_starts_from_a_newline(run):
    code, out = run("--steps", "2", "--eval-interval", "2")
    assert code == 0
    from numpygpt.inference.loading import load_model
    loaded = load_model(out)
    assert loaded.trained_on_eot is False
    assert loaded.document_start() == loaded.tokenizer.encode_ordinary("\n")
