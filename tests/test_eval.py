"""numpygpt eval: the log-likelihood of a whole text in sliding windows. It equals a direct sum
of per-token losses from plain full forwards, scores every token exactly once whatever the
stride, and on an exported Hugging Face folder agrees with transformers' own model."""
import json

import numpy as np
import pytest

import bpe
from numpygpt.commands import main as numpygpt
from numpygpt.config import GPTConfig
from numpygpt.formats import checkpoint, hf
from numpygpt.inference.scoring import score_tokens, windows
from numpygpt.model import GPT

BLOCK = 8


def tiny_model(dtype="float64", vocab_size=37):
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_embd=12, dtype=dtype),
                seed=3)
    model.params.data *= 4.0  # distinct predictions
    return model


def log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity_recipe(forward, ids, max_length, stride):
    """The usual sliding-window recipe (windows of max_length tokens, stride apart, each
    scoring the targets the one before did not), written out plainly: (total nats, tokens
    scored). forward(ids (1, T)) -> logits (1, T, V)."""
    total, scored, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        logp = log_softmax(forward(ids[None, begin:end - 1])[0])  # row i predicts ids[begin + i + 1]
        for target in range(max(prev_end, begin + 1), end):
            total -= logp[target - begin - 1, ids[target]]
            scored += 1
        prev_end = end
        if end == len(ids):
            break
    return total, scored


@pytest.mark.parametrize("n", [2, 5, BLOCK, BLOCK + 1, 30])
@pytest.mark.parametrize("stride", [1, 3, BLOCK // 2, BLOCK])
def test_every_token_is_scored_once_as_the_plain_recipe_scores_it(n, stride):
    model = tiny_model()
    ids = np.random.default_rng(n * 10 + stride).integers(0, 37, n)
    scores = score_tokens(model, ids, stride=stride, batch_size=3)
    assert np.isnan(scores.token_nats[0]) and np.isfinite(scores.token_nats[1:]).all()
    assert scores.tokens == n - 1
    total, scored = perplexity_recipe(model.forward, ids, BLOCK + 1, stride)
    assert scored == n - 1
    assert scores.total_nats == pytest.approx(total, rel=1e-12)


def test_disjoint_windows_equal_a_direct_sum_over_full_forwards():
    """stride = context: windows of block_size targets, each scored from a fresh start."""
    model = tiny_model()
    ids = np.random.default_rng(0).integers(0, 37, 3 * BLOCK + 5)
    direct = 0.0
    for begin in range(0, len(ids) - 1, BLOCK):
        x, y = ids[begin:begin + BLOCK], ids[begin + 1:begin + BLOCK + 1]
        logp = log_softmax(model.forward(x[None])[0])[:len(y)]
        direct -= logp[np.arange(len(y)), y].sum()
    assert score_tokens(model, ids, stride=BLOCK).total_nats == pytest.approx(direct, rel=1e-12)
    assert [w[2] for w in windows(len(ids), BLOCK, BLOCK)] == [0, 0, 0, 0]


def test_half_context_stride_gives_each_token_at_least_half_a_context_before_it():
    ids = np.arange(40)
    plan = list(windows(len(ids), BLOCK, BLOCK // 2))
    targets = [t for begin, length, first in plan for t in range(begin + 1 + first, begin + 1 + length)]
    assert targets == list(range(1, 40))
    assert all(first >= BLOCK // 2 for _, _, first in plan[1:])


def byte_tokenizer(folder):
    bpe.Tokenizer([bytes([b]) for b in range(256)] + [b"<|endoftext|>"], [], {"<|endoftext|>": 256}).save(folder)
    return folder


def test_the_command_scores_a_checkpoint_on_a_text(tmp_path, capsys):
    model = tiny_model("float32", vocab_size=257)
    files = checkpoint.read_tokenizer_files(byte_tokenizer(tmp_path / "tok"))
    checkpoint.save(tmp_path / "out", model, step=3, tokenizer_files=files, train_state={"data": None})
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question. " * 3)
    code = numpygpt(["eval", "--out-dir", str(tmp_path / "out"), "--data", str(text), "--split", "all",
                     "--stride", "4", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert "loaded" in captured.err and "step 3" in captured.err
    ids = np.frombuffer(text.read_bytes(), dtype=np.uint8).astype(np.int64)
    expected = score_tokens(model, ids, stride=4)
    assert figures["tokens"] == len(ids) - 1 == expected.tokens
    assert figures["nats_per_token"] == pytest.approx(expected.nats_per_token, rel=1e-6)
    assert figures["bits_per_byte"] == pytest.approx(expected.total_nats / len(ids) / np.log(2), rel=1e-6)
    assert numpygpt(["eval", "--out-dir", str(tmp_path / "out"), "--data", str(text), "--stride", "99"]) == 2
    assert "--stride must be in 1..8" in capsys.readouterr().err


def test_an_exported_model_scores_as_transformers_scores_it(tmp_path, capsys, gpt2_dir):
    """The same text through `numpygpt eval --init-from` an exported folder and through
    transformers' GPT2LMHeadModel with the same windows: equal to float32 rounding."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=16), seed=5)
    hf.export(model, tmp_path / "hf", tokenizer_dir=gpt2_dir)
    text = tmp_path / "text.txt"
    text.write_text("It was the best of times, it was the worst of times, it was the age of wisdom. " * 6)
    assert numpygpt(["eval", "--init-from", str(tmp_path / "hf"), "--data", str(text), "--split", "all",
                     "--stride", "12", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = np.array(bpe.load(gpt2_dir).encode_ordinary(text.read_text()))

    def forward(x):
        with torch.no_grad():
            return reference(torch.tensor(x)).logits.double().numpy()
    total, scored = perplexity_recipe(forward, ids, 33, 12)
    assert ours["tokens"] == scored == len(ids) - 1
    assert ours["nats_per_token"] == pytest.approx(total / scored, rel=1e-5)
