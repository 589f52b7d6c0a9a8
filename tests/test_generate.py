"""Generation over the KV cache (tests/test_decoder.py checks the cache itself): greedy tokens
are the full forward's argmax, with or without the cache; the loop stops, seeds and crops as
it says; streamed text never shows half a character."""
import numpy as np
import pytest

import bpe
from numpygpt.config import GPTConfig
from numpygpt.inference.generate import DONE, TextStream, generate
from numpygpt.model import GPT
from numpygpt.inference.sampling import Sampler

TOLERANCE = 1e-10


def tiny_model(dtype="float64", **changes):
    config = GPTConfig(vocab_size=37, block_size=8, n_layer=2, n_head=2, n_embd=12, dtype=dtype)
    model = GPT(config.with_(**changes), seed=1)
    # At GPT-2's 0.02 init the logits are nearly uniform; larger weights make them differ.
    model.params.data *= 5.0
    return model


def full_forward_last(model, context):
    return model.forward(context)[:, -1]


def test_greedy_generation_is_the_same_with_and_without_the_cache():
    """Temperature 0 through several slides: the cache changes the speed, not the tokens."""
    model = tiny_model()
    tokens = {use_cache: np.array(list(generate(model, [1, 2, 3], max_new_tokens=30,
                                                sampler=Sampler(temperature=0), rng=None,
                                                num_samples=2, use_cache=use_cache)))
              for use_cache in (True, False)}
    np.testing.assert_array_equal(tokens[True], tokens[False])
    assert tokens[True].shape == (30, 2)


def test_greedy_generation_continues_with_the_argmax_of_the_full_forward():
    """Within the context, each greedy token is the argmax of the model's full forward."""
    model = tiny_model()
    text = [5, 9]
    for step in generate(model, text, max_new_tokens=6, sampler=Sampler(temperature=0), rng=None):
        assert step[0] == model.forward(np.array([text]))[0, -1].argmax()
        text.append(int(step[0]))


def test_same_seed_same_samples_other_seed_other_samples():
    """The generator passed in is the only source of randomness (float32, as sample.py runs)."""
    model = tiny_model("float32")

    def run(seed):
        return np.array(list(generate(model, [0], max_new_tokens=20, sampler=Sampler(top_p=0.95),
                                      rng=np.random.default_rng(seed), num_samples=3)))

    np.testing.assert_array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_a_sample_that_draws_the_stop_token_stops():
    """Sample 0 draws the stop token at step 1, sample 1 at step 3: each shows DONE from then
    on, and generation ends as soon as both have stopped."""
    script = iter([[4, 4], [0, 5], [6, 7], [8, 0], [9, 9]])
    steps = list(generate(tiny_model(), [1], max_new_tokens=10, stop_token=0, num_samples=2,
                          sampler=lambda logits, rng: np.array(next(script)), rng=None))
    assert np.array(steps).tolist() == [[4, 4], [DONE, 5], [DONE, 7], [DONE, DONE]]


def test_samples_only_ids_the_tokenizer_knows():
    """With n_vocab below the model's vocabulary, padded ids are never drawn."""
    model = tiny_model()
    steps = generate(model, [1], max_new_tokens=30, sampler=Sampler(temperature=5.0),
                     rng=np.random.default_rng(0), num_samples=4, n_vocab=10)
    assert np.array(list(steps)).max() < 10


def test_zero_new_tokens_yields_nothing_and_bad_arguments_fail_at_the_call():
    """Errors surface when generate is called, not at the first next()."""
    model = tiny_model()
    assert list(generate(model, [1], max_new_tokens=0, sampler=Sampler(), rng=None)) == []
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], max_new_tokens=5, sampler=Sampler(), rng=None)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1], max_new_tokens=-1, sampler=Sampler(), rng=None)


def test_text_stream_waits_for_the_rest_of_a_split_character():
    """'é' is two bytes; when each is its own token the first push shows nothing, the second
    the whole character. A byte that never finishes a character becomes U+FFFD at close."""
    pieces = {0: b"caf", 1: b"\xc3", 2: b"\xa9", 3: b"\xe2\x82"}
    stream = TextStream(lambda ids: b"".join(pieces[i] for i in ids))
    assert [stream.push(t) for t in (0, 1, 2, 3)] == ["caf", "", "é", ""]
    assert stream.close() == "\ufffd"


def test_text_stream_with_gpt2_tokens_joins_to_the_decoded_text(gpt2_dir):
    """Streaming GPT-2's tokens one by one gives the decoded text, each piece whole characters
    (byte-level tokens split emoji and CJK characters)."""
    tok = bpe.load(gpt2_dir)
    text = "naïve 🙂 emoji, 日本語のテキスト, and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢."
    stream = TextStream(tok.decode_bytes)
    pieces = [stream.push(t) for t in tok.encode(text)] + [stream.close()]
    assert "".join(pieces) == text
    assert "" in pieces  # some token did end inside a character
    assert all("\ufffd" not in piece for piece in pieces)
