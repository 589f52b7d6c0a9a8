"""Hugging Face GPT-2 interop: the external proof that our forward and backward are GPT-2's.

A small random GPT2LMHeadModel is built offline from a GPT2Config, saved, and loaded here: the
logits, the loss and the gradient of every parameter must match PyTorch autograd. Exporting
back gives a folder transformers loads to the same logits. Skipped without torch/transformers.
"""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from numpygpt.formats import hf  # noqa: E402
from numpygpt.model import GPT  # noqa: E402
from numpygpt.config import GPTConfig  # noqa: E402

HF_CONFIG = dict(vocab_size=300, n_positions=16, n_embd=24, n_layer=2, n_head=3,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_CONFIG))
    with torch.no_grad():  # non-zero biases and gains so every parameter matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path_factory.mktemp("hf-gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, HF_CONFIG["vocab_size"], size=(2, 11))


def torch_model(folder, dtype):
    model = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").to(dtype)
    return model.eval()


def torch_loss(model, ids):
    """Next-token cross-entropy in the model's own dtype (transformers' built-in loss casts the
    logits to float32, which would hide float64 agreement)."""
    logits = model(torch.tensor(ids)).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             torch.tensor(ids[:, 1:]).reshape(-1)), logits


@pytest.mark.parametrize("dtype, torch_dtype, tol", [("float32", torch.float32, 1e-4),
                                                    ("float64", torch.float64, 1e-8)])
def test_logits_and_loss_match_transformers(hf_folder, dtype, torch_dtype, tol):
    ours = hf.load(hf_folder, dtype=dtype)
    ref = torch_model(hf_folder, torch_dtype)
    ids = batch()
    with torch.no_grad():
        ref_loss, ref_logits = torch_loss(ref, ids)
    np.testing.assert_allclose(ours.forward(ids), ref_logits.numpy(), atol=tol, rtol=0)
    loss = ours.loss(ids[:, :-1], ids[:, 1:])
    assert abs(loss - ref_loss.item()) < tol


def test_gradients_match_torch_autograd(hf_folder):
    """dL/dparam for every parameter, float64, against torch autograd (tied wte included)."""
    ours = hf.load(hf_folder, dtype="float64")
    ref = torch_model(hf_folder, torch.float64)
    ids = batch(1)
    ours.zero_grad()
    ours.loss(ids[:, :-1], ids[:, 1:])
    ours.backward()
    torch_loss(ref, ids)[0].backward()
    worst = 0.0
    for name, p in ref.named_parameters():
        key = name.removeprefix("transformer.")
        np.testing.assert_allclose(ours.params.grads[key], p.grad.numpy(), atol=1e-10, rtol=1e-7, err_msg=key)
        worst = max(worst, float(np.abs(ours.params.grads[key] - p.grad.numpy()).max()))
    assert worst < 1e-10


def test_export_round_trip_through_transformers(hf_folder, tmp_path, gpt2_dir):
    """Our model -> HF folder -> GPT2LMHeadModel gives our logits; the tokenizer loads too."""
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8, qkv_bias=False), seed=3)
    hf.export(model, tmp_path / "export", tokenizer_dir=gpt2_dir)
    ref = torch_model(tmp_path / "export", torch.float32)
    ids = np.array([[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]])
    with torch.no_grad():
        logits = ref(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model.forward(ids), logits, atol=1e-5, rtol=0)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(tmp_path / "export")
    assert tokenizer.encode("The quick brown fox") == [464, 2068, 7586, 21831]
    reloaded = hf.load(tmp_path / "export")
    np.testing.assert_array_equal(reloaded.forward(ids), model.forward(ids))


def test_bad_folders_give_clear_errors(hf_folder, tmp_path):
    with pytest.raises(hf.HFError, match="neither a folder nor a model"):
        hf.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hf.HFError, match="no config.json"):
        hf.load(tmp_path / "empty")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(hf.HFError, match="only GPT-2"):
        hf.load(bert)
    wrong = tmp_path / "wrong-shape"
    wrong.mkdir()
    config = json.loads((hf_folder / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**config, "n_embd": 30}))
    (wrong / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    with pytest.raises(hf.HFError, match="shape"):
        hf.load(wrong)
    (wrong / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(hf.HFError, match="activation_function"):
        hf.load(wrong)


def test_fine_tune_then_export_from_the_command_line(hf_folder, tmp_path, monkeypatch, data_dir, gpt2_dir, capsys):
    """train.py --init-from an HF folder fine-tunes it with fine-tuning's own defaults;
    `numpygpt export` hands the result back to transformers with the same logits."""
    import train
    from numpygpt.commands import main as numpygpt
    from numpygpt.formats import checkpoint
    monkeypatch.setenv("NUMPYGPT_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    # The random HF model has a 300-token vocabulary: fine-tune it with a BPE of that size.
    code = train.main(["--init-from", str(hf_folder), "--data", str(data_dir / "the-verdict.txt"),
                       "--tokenizer", "train", "--vocab-size", "300", "--steps", "3", "--eval-interval", "3",
                       "--eval-iters", "1", "--batch-size", "2", "--sample-tokens", "0", "--out-dir", str(out)])
    assert code == 0
    assert "fine-tuning lr 3e-05, min_lr 3e-05, warmup_steps 0, batch_size 2, block_size 16, steps 3" in \
        capsys.readouterr().err
    ckpt = checkpoint.load(out)
    settings = ckpt.train_state["train_config"]
    # A constant small learning rate, no warmup, no dropout, the model's own context (16 here).
    assert (settings["lr"], settings["min_lr"], settings["warmup_steps"]) == (3e-5, 3e-5, 0)
    assert settings["block_size"] == ckpt.config.block_size == 16 and ckpt.config.dropout == 0.0
    # A learning rate of one's own stays constant too.
    assert train.main(["--init-from", str(hf_folder), "--data", str(data_dir / "the-verdict.txt"), "--tokenizer",
                       "train", "--vocab-size", "300", "--steps", "2", "--eval-interval", "2", "--eval-iters", "1",
                       "--sample-tokens", "0", "--lr", "1e-5", "--out-dir", str(tmp_path / "o1")]) == 0
    settings = checkpoint.load(tmp_path / "o1").train_state["train_config"]
    assert settings["lr"] == settings["min_lr"] == 1e-5
    too_long = train.main(["--init-from", str(hf_folder), "--block-size", "32", "--out-dir", str(tmp_path / "o2")])
    assert too_long == 2  # the HF model's context is 16
    for flags in (["--n-layer", "4"], ["--model", "tiny"], ["--vocab-size", "600"]):  # the folder's shape holds
        assert train.main(["--init-from", str(hf_folder), *flags, "--out-dir", str(tmp_path / "o3")]) == 2
    assert numpygpt(["export", str(out), str(tmp_path / "export")]) == 0
    ours = hf.load(tmp_path / "export")
    ref = torch_model(tmp_path / "export", torch.float32)
    ids = batch()
    with torch.no_grad():
        np.testing.assert_allclose(ours.forward(ids), ref(torch.tensor(ids)).logits.numpy(), atol=1e-4, rtol=0)
    before = hf.load(hf_folder)
    assert not np.array_equal(before.params.data, ours.params.data)  # the weights were trained


def test_export_never_writes_over_a_checkpoint_or_other_files(tmp_path, gpt2_dir, capsys):
    """A folder that holds anything but an earlier export is refused, its files untouched
    (a checkpoint's own config.json and model.safetensors would be replaced); an earlier
    export is replaced."""
    from numpygpt.commands import main as numpygpt
    from numpygpt.formats import checkpoint
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=8), seed=5)
    run = tmp_path / "run"
    checkpoint.save(run, model, step=1, tokenizer_files=checkpoint.read_tokenizer_files(gpt2_dir))
    kept = {f: f.read_bytes() for f in run.rglob("*") if f.is_file()}
    for target in (run, run / "step-000001", run / "step-000001" / "tokenizer"):
        assert numpygpt(["export", str(run), str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already holds" in err[0] and "not an earlier export" in err[0], err
    assert kept == {f: f.read_bytes() for f in run.rglob("*") if f.is_file()}
    with pytest.raises(hf.HFError, match="this is a numpygpt checkpoint, not a Hugging Face folder"):
        hf.load(run / "step-000001")  # as --init-from would
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(hf.HFError, match="already holds config.json"):
        hf.export(model, mine)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(hf.HFError, match="is a file"):
        hf.export(model, tmp_path / "a-file")
    hf.export(model, tmp_path / "export", tokenizer_dir=gpt2_dir)
    hf.export(GPT(model.config, seed=6), tmp_path / "export", tokenizer_dir=gpt2_dir)  # an earlier export: replaced
    assert not np.array_equal(hf.load(tmp_path / "export").params.data, model.params.data)


def test_sample_from_a_hugging_face_folder(tmp_path, gpt2_dir):
    """sample.py --init-from a GPT-2 folder with its vocab.json + merges.txt writes text."""
    import subprocess
    import sys
    from conftest import REPO_ROOT
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8), seed=4)
    hf.export(model, tmp_path / "gpt2-like", tokenizer_dir=gpt2_dir)
    run = subprocess.run([sys.executable, str(REPO_ROOT / "sample.py"), "--init-from", str(tmp_path / "gpt2-like"),
                          "--prompt", "Hello", "--max-new-tokens", "5", "--temperature", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Hello")
    missing = subprocess.run([sys.executable, str(REPO_ROOT / "sample.py"), "--init-from", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("sample.py: error: ") and len(missing.stderr.strip().splitlines()) == 1
