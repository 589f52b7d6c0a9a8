"""The whole model: gradients of the loss against every parameter, causality, and learning."""
import numpy as np
import pytest

from numpygpt.config import GPTConfig, preset
from numpygpt.gradcheck import TOLERANCE, numerical_gradient, relative_error
from numpygpt.model import GPT



def tiny_config(**changes):
    base = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=6, dtype="float64")
    return base.with_(**changes)


def batch(config, b=2, t=5, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, size=(b, t))
    targets = rng.integers(0, config.vocab_size, size=(b, t))
    targets[0, 1] = -1  # an ignored position
    return ids, targets


def check_model_gradients(config, dropout_seed=None):
    """dL/dparam for every parameter tensor against centred differences of the mean loss."""
    model = GPT(config, seed=1)
    # At GPT-2's 0.02 init some gradients are ~1e-4, where the differences' rounding noise
    # is already 1e-6 relative; 5x larger weights make every gradient comfortably measurable.
    model.params.data *= 5.0
    ids, targets = batch(config)
    rng = lambda: None if dropout_seed is None else np.random.default_rng(dropout_seed)
    model.zero_grad()
    model.loss(ids, targets, rng())
    model.backward()
    errors = {}
    for name in model.params:
        numerical = numerical_gradient(lambda: model.loss(ids, targets, rng()), model.params[name])
        errors[name] = relative_error(model.params.grads[name], numerical)
    assert max(errors.values()) < TOLERANCE, errors
    return errors


def test_model_gradients_tied_head():
    """Every parameter of a 2-layer GPT, with the LM head tied to wte (wte's gradient is the
    sum of its use as an embedding and as the output projection)."""
    check_model_gradients(tiny_config())


def test_model_gradients_untied_head_no_qkv_bias():
    """The seed's variant: no bias on the fused qkv projection; here also an untied head."""
    check_model_gradients(tiny_config(tie_weights=False, qkv_bias=False))


def test_model_gradients_with_fixed_dropout_mask():
    """Dropout on (p = 0.2) with the same random generator state for every evaluation."""
    check_model_gradients(tiny_config(dropout=0.2), dropout_seed=5)


def test_gradients_accumulate_across_backward_calls():
    """Two loss/backward calls without zero_grad sum their gradients (gradient accumulation)."""
    config = tiny_config()
    model = GPT(config, seed=1)
    ids, targets = batch(config)
    model.loss(ids, targets)
    model.backward()
    once = model.params.grad.copy()
    model.loss(ids, targets)
    model.backward()
    np.testing.assert_allclose(model.params.grad, 2 * once, rtol=1e-12)


def test_causality():
    """Changing tokens after position t never changes the logits at positions <= t."""
    config = tiny_config()
    model = GPT(config, seed=2)
    ids, _ = batch(config, b=1, t=6)
    logits = model.forward(ids)
    for t in range(ids.shape[1] - 1):
        changed = ids.copy()
        changed[0, t + 1:] = (changed[0, t + 1:] + 1) % config.vocab_size
        np.testing.assert_array_equal(model.forward(changed)[0, :t + 1], logits[0, :t + 1])


def test_float32_matches_float64():
    """The float32 model computes the same loss as float64 to float32 precision."""
    config = tiny_config(n_embd=16, n_head=4)
    ids, targets = batch(config)
    loss64 = GPT(config, seed=3).loss(ids, targets)
    loss32 = GPT(config.with_(dtype="float32"), seed=3).loss(ids, targets)
    assert abs(loss64 - loss32) < 1e-5


def test_initialisation_follows_gpt2():
    """N(0, 0.02) weights, c_proj scaled by 1/sqrt(2 n_layer), zero biases, unit LN gains."""
    config = GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=64)
    params = GPT(config, seed=0).params
    assert abs(params["wte.weight"].std() - 0.02) < 1e-3
    assert abs(params["h.0.mlp.c_fc.weight"].std() - 0.02) < 1e-3
    assert abs(params["h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(8)) < 1e-3
    assert np.all(params["h.1.attn.c_attn.bias"] == 0)
    assert np.all(params["h.1.ln_2.weight"] == 1)


def test_presets_have_expected_sizes():
    """GPT-2 small has 124,439,808 parameters (tied head)."""
    from numpygpt.model import parameter_shapes
    shapes = parameter_shapes(preset("gpt2"))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 124_439_808


def test_sequence_longer_than_context_is_refused():
    model = GPT(tiny_config(), seed=0)
    with pytest.raises(ValueError, match="longer than the context"):
        model.forward(np.zeros((1, 7), dtype=np.int64))


def test_tiny_model_overfits_one_batch():
    """A tiny model memorises one small batch: the loss falls near zero."""
    from numpygpt.optim import AdamW
    config = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 32, size=(4, 17))
    optimizer = AdamW(model.params, lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(150):
        model.zero_grad()
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        first = first if first is not None else loss
        model.backward()
        optimizer.step()
    assert first > 3.0 and loss < 0.05, (first, loss)
