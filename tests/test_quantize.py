"""int8 weights for generation (numpygpt.inference.quantize): the rounding stays within half a
step of every weight, a quantized model gives the float32 model's greedy tokens where its
choices are clear, its loss is the float32 model's to a fraction of a percent, and loading a
checkpoint quantized straight from its file gives the same model as quantizing in memory."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpygpt.config import GPTConfig
from numpygpt.formats import checkpoint
from numpygpt.inference.decoder import Decoder
from numpygpt.inference.generate import generate
from numpygpt.inference.quantize import DECODE_ROWS, dequantize, quantize_model, quantize_rows
from numpygpt.inference.sampling import Sampler
from numpygpt.inference.scoring import score_tokens
from numpygpt.model import GPT


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 60), scale=st.sampled_from([1e-3, 0.02, 5.0]),
       seed=st.integers(0, 1000))
def test_every_weight_is_within_half_a_step_of_its_int8(rows, cols, scale, seed):
    w = np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32) * scale
    w[0] = 0.0  # a zero row
    q, step = quantize_rows(w)
    assert q.dtype == np.int8 and q.flags.c_contiguous and step.dtype == np.float32
    assert np.all(np.abs(dequantize(q, step) - w) <= step[:, None] / 2 * (1 + 1e-6))
    assert np.all(np.abs(q).max(axis=1)[1:] == 127)  # the largest of each row uses the whole range


@pytest.fixture(autouse=True, params=["int8 kernel", "widened for BLAS"])
def path(request, monkeypatch):
    """Every test runs both ways a quantized model multiplies: with the int8 kernel (a model
    larger than the cache) and on its matrices widened back to float32 (one that fits)."""
    from numpygpt.inference import quantize
    monkeypatch.setattr(quantize, "CACHE_BYTES", 0 if request.param == "int8 kernel" else 1 << 40)
    return request.param


def sharp_model(scale=3.0, **changes):
    """A small model with weights `scale` times GPT-2's initial ones: logits far apart."""
    config = GPTConfig(vocab_size=61, block_size=32, n_layer=2, n_head=2, n_embd=32).with_(**changes)
    model = GPT(config, seed=3)
    model.params.data *= scale
    return model


@pytest.mark.parametrize("changes", [{}, dict(qkv_bias=False, tie_weights=False)])
def test_int8_decoding_picks_the_float32_greedy_token_wherever_the_choice_is_clear(changes):
    """Both decoders fed the float32 model's greedy tokens through two slides of the window:
    at every step where the float32 logits' top two differ by more than 0.5, the int8 model's
    most likely token is the same; and the int8 logits stay within a small distance."""
    reference, quantized = sharp_model(**changes), quantize_model(sharp_model(**changes))
    exact, int8 = Decoder(reference, 1), Decoder(quantized, 1)
    a, b = exact.prefill([0], [[5, 17, 3]])[0], int8.prefill([0], [[5, 17, 3]])[0]
    clear = 0
    for _ in range(80):
        top2 = np.sort(a)[-2:]
        if top2[1] - top2[0] > 0.5:
            clear += 1
            assert b.argmax() == a.argmax()
        assert np.abs(b - a).max() < 0.06 * np.abs(a).max()
        token = int(a.argmax())
        a, b = exact.step([0], [token])[0], int8.step([0], [token])[0]
    assert clear >= 10 and exact.slides >= 2
    assert quantized.params.data.size < reference.params.data.size / 2  # the float32 matrices are gone


def test_int8_generation_runs_the_decoder_the_float32_model_runs():
    """generate over a quantized model: prefill, copies to other samples, slides."""
    quantized = quantize_model(sharp_model())
    steps = np.array(list(generate(quantized, [5, 17, 3], max_new_tokens=40, sampler=Sampler(temperature=0),
                                   rng=None, num_samples=2)))
    assert steps.shape == (40, 2) and np.array_equal(steps[:, 0], steps[:, 1])


def test_int8_loss_is_the_float32_loss_to_a_fraction_of_a_percent():
    """Prefill rows (more than DECODE_ROWS) take BLAS on widened blocks, decoding rows the int8
    kernel: both are the quantized model."""
    model = sharp_model(scale=1.0)  # the usual scale of trained weights
    ids = np.random.default_rng(0).integers(0, 61, 400)
    full = score_tokens(model, ids).nats_per_token
    quantized = quantize_model(model)
    assert abs(score_tokens(quantized, ids).nats_per_token / full - 1) < 5e-3
    x = np.random.default_rng(1).normal(size=(DECODE_ROWS + 1, 32)).astype(np.float32)
    layer = quantized.blocks[0].mlp.c_fc
    np.testing.assert_allclose(layer.forward(x[:DECODE_ROWS])[0], layer.forward(x)[0], rtol=1e-4, atol=1e-5)


def test_a_checkpoint_quantized_from_its_file_equals_one_quantized_in_memory(tmp_path):
    model = sharp_model()
    checkpoint.save(tmp_path / "out", model, step=1)
    ckpt = checkpoint.load(tmp_path / "out")
    from_file = quantize_model(GPT(ckpt.config, init=False), ckpt.tensors)
    in_memory = quantize_model(sharp_model())
    ids = np.random.default_rng(2).integers(0, 61, (2, 20))
    np.testing.assert_array_equal(from_file.forward(ids), in_memory.forward(ids))
