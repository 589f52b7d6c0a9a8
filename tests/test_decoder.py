"""The KV-cache decoder (numpygpt.inference.decoder) that generation and the server share: at
every step the cached logits equal a full forward over the tokens a slot holds (float64), as
slots join, leave, copy and slide their windows; a batched step equals one slot at a time."""
import numpy as np
import pytest

from numpygpt.config import GPTConfig
from numpygpt.inference.decoder import Decoder
from numpygpt.model import GPT

TOLERANCE = 1e-10
V = 37


def tiny_model(**changes):
    config = GPTConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=12, dtype="float64")
    model = GPT(config.with_(**changes), seed=1)
    model.params.data *= 5.0  # distinct logits, so a wrong row cannot pass for a right one
    return model


def full_forward_last(model, context):
    return model.forward(np.asarray(context)[None])[0, -1]


@pytest.mark.parametrize("changes", [{}, dict(qkv_bias=False, tie_weights=False)])
def test_sequences_stepped_together_get_the_full_forward_logits_at_every_position(changes):
    """Three sequences with different prompts, stepped together through three times the
    context: before and after each slide of the window, every row equals the full forward."""
    model = tiny_model(**changes)
    rng = np.random.default_rng(0)
    decoder = Decoder(model, 3)
    logits = decoder.prefill([0, 1, 2], rng.integers(0, V, size=(3, 5)))
    for _ in range(3 * model.config.block_size):
        for slot in range(3):
            np.testing.assert_allclose(logits[slot], full_forward_last(model, decoder.context(slot)),
                                       rtol=0, atol=TOLERANCE)
        logits = decoder.step([0, 1, 2], rng.integers(0, V, size=3))
    assert decoder.slides >= 4


def test_every_slot_gets_the_full_forward_logits_as_slots_join_leave_and_slide():
    """Four slots with prompts of different lengths joining at different steps, stepped in
    changing (also non-contiguous) subsets through several slides of the window."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    decoder = Decoder(model, 4)

    def check(slot, logits):
        np.testing.assert_allclose(logits, full_forward_last(model, decoder.context(slot)), rtol=0, atol=TOLERANCE)

    for slot, length in [(1, 3), (3, 12)]:  # 12 > block_size: cropped to its end
        check(slot, decoder.prefill([slot], rng.integers(0, V, (1, length)))[0])
    for step in range(30):
        if step == 5:
            check(0, decoder.prefill([0], rng.integers(0, V, (1, 6)))[0])
        if step == 9:
            decoder.copy(0, 2)
        slots = [s for s in ([0, 1, 2, 3] if step >= 9 else [1, 3] if step < 5 else [0, 1, 3])
                 if not (step % 4 == 1 and s == 1)]  # slot 1 sits some steps out
        logits = decoder.step(slots, rng.integers(0, V, len(slots)))
        for slot, row in zip(slots, logits):
            check(slot, row)
    assert decoder.lengths.min() >= model.config.block_size // 2


def test_a_batched_step_equals_each_slot_stepped_alone():
    """Slots of different lengths, some about to slide, stepped together in float32 as the
    server runs them, and the same tokens given to one single-slot decoder per slot."""
    model = tiny_model(dtype="float32")
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, V, n) for n in (2, 5, 8, 7)]
    together = Decoder(model, 4)
    alone = [Decoder(model, 1) for _ in prompts]
    for slot, prompt in enumerate(prompts):
        together.prefill([slot], prompt[None])
        alone[slot].prefill([0], prompt[None])
    for _ in range(12):
        tokens = rng.integers(0, V, 4)
        batched = together.step([3, 0, 2, 1], tokens[[3, 0, 2, 1]])
        for row, slot in enumerate([3, 0, 2, 1]):
            single = alone[slot].step([0], tokens[slot:slot + 1])[0]
            np.testing.assert_allclose(batched[row], single, rtol=0, atol=1e-5)
            assert together.context(slot).tolist() == alone[slot].context(0).tolist()


def test_the_reference_without_a_cache_gives_the_same_logits():
    model = tiny_model()
    rng = np.random.default_rng(4)
    cached, reference = Decoder(model, 2), Decoder(model, 2, use_cache=False)
    prompt = rng.integers(0, V, (2, 6))
    np.testing.assert_allclose(cached.prefill([0, 1], prompt), reference.prefill([0, 1], prompt),
                               rtol=0, atol=TOLERANCE)
    for _ in range(10):
        tokens = rng.integers(0, V, 2)
        np.testing.assert_allclose(cached.step([0, 1], tokens), reference.step([0, 1], tokens), rtol=0,
                                   atol=TOLERANCE)


def test_a_prompt_longer_than_the_context_is_cropped_to_its_end_and_counts_as_a_slide():
    model = tiny_model()
    prompt = np.random.default_rng(2).integers(0, V, size=(1, 20))
    decoder = Decoder(model, 1)
    logits = decoder.prefill([0], prompt)
    assert decoder.context(0).tolist() == prompt[0, -8:].tolist() and decoder.slides == 1
    np.testing.assert_allclose(logits[0], full_forward_last(model, prompt[0, -8:]), rtol=0, atol=TOLERANCE)


def test_the_window_keeps_the_last_half_of_the_context_when_it_slides():
    """A full window plus one token becomes the last block_size/2 tokens, the new one last."""
    decoder = Decoder(tiny_model(), 2)
    decoder.prefill([1], [list(range(8))])
    decoder.step([1], [30])
    assert decoder.context(1).tolist() == [5, 6, 7, 30] and decoder.slides == 1


def test_a_cache_larger_than_the_machine_is_refused_before_it_is_made(monkeypatch):
    """Rather than NumPy's MemoryError, or a process the system stops once the lazily taken
    pages run out, one ConfigError that says how much the cache needs."""
    from numpygpt.errors import ConfigError
    from numpygpt.inference import decoder
    model = tiny_model()
    c = model.config
    one_sequence = 2 * c.n_layer * c.n_head * c.block_size * c.head_size * np.dtype(c.dtype).itemsize  # keys, values
    monkeypatch.setattr(decoder, "physical_memory", lambda: 100 * one_sequence)
    Decoder(model, 90)  # fits in 90% of the memory
    with pytest.raises(ConfigError, match="a KV cache for 91 sequences at once needs about"):
        Decoder(model, 91)
    Decoder(model, 1000, use_cache=False)  # the reference path keeps no cache
