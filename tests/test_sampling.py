"""Sampling rules on plain logits: greedy, temperature, top-k and top-p keep exactly what they
promise, for any distribution hypothesis can think of (ties, spikes, flat ones)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numpygpt.inference.sampling import Sampler, draw, softmax, top_k_filter, top_p_filter

TOLERANCE = 1e-9  # for sums of probabilities taken in different orders

logit_rows = arrays(np.float64, st.integers(1, 40), elements=st.floats(-20, 20))
probabilities = st.floats(0, 1, exclude_min=True)


def mass_strictly_above(probs):
    """(V,) -> (V,): for each token, the total probability of the tokens more likely than it."""
    return np.array([probs[probs > q].sum() for q in probs])


def test_temperature_zero_is_argmax_and_uses_no_randomness():
    """Greedy picks the most likely token of each row and leaves the generator untouched."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 100)).astype(np.float32)
    state = rng.bit_generator.state
    assert np.array_equal(Sampler(temperature=0)(logits, rng), logits.argmax(axis=1))
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_draws_follow_softmax_of_logits_over_temperature(temperature):
    """20,000 draws land on each token as often as softmax(logits / T) says, and never on a
    token of probability 0."""
    logits = np.array([2.0, 1.0, 0.0, -1.0, -np.inf])
    n = 20_000
    tokens = Sampler(temperature=temperature)(np.tile(logits, (n, 1)), np.random.default_rng(1))
    frequencies = np.bincount(tokens, minlength=logits.size) / n
    expected = softmax(logits[None] / temperature)[0]
    assert np.abs(frequencies - expected).max() < 0.015
    assert frequencies[-1] == 0


def test_draw_never_picks_a_zero_probability_token():
    """Inverse-transform sampling with zeros at the start, middle and end of the row."""
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]])
    tokens = draw(np.repeat(probs, 10_000, axis=0), np.random.default_rng(2).random(10_000))
    assert set(tokens.tolist()) == {1, 3}


def test_same_seed_same_tokens():
    """The generator is the only source of randomness."""
    logits = np.random.default_rng(3).normal(size=(4, 50))
    sampler = Sampler(temperature=0.8, top_k=20, top_p=0.9)
    first = [sampler(logits, rng) for rng in [np.random.default_rng(7)] * 5]
    second = [sampler(logits, rng) for rng in [np.random.default_rng(7)] * 5]
    assert np.array_equal(first, second)


@settings(max_examples=200, deadline=None)
@given(logits=logit_rows, data=st.data())
def test_top_k_keeps_exactly_the_k_most_likely(logits, data):
    """A token survives top-k when fewer than k tokens are strictly more likely (so tokens
    tied with the k-th survive too), and every draw is such a token."""
    k = data.draw(st.integers(1, logits.size + 2))
    kept = np.isfinite(top_k_filter(logits[None], k)[0])
    more_likely = np.array([(logits > x).sum() for x in logits])
    assert np.array_equal(kept, more_likely < k)
    tokens = Sampler(top_k=k)(np.tile(logits, (50, 1)), np.random.default_rng(0))
    assert np.all(more_likely[tokens] < k)


@settings(max_examples=200, deadline=None)
@given(logits=logit_rows, p=probabilities)
def test_top_p_keeps_the_smallest_set_reaching_p(logits, p):
    """A token survives top-p when the tokens strictly more likely than it hold less than p:
    the kept set reaches p, includes the token that crosses p, and drops any token whose
    removal would still leave p."""
    probs = softmax(logits[None])[0]
    above = mass_strictly_above(probs)
    kept = np.isfinite(top_p_filter(logits[None], p)[0])
    assert np.all(kept[above < p - TOLERANCE])
    assert not np.any(kept[above >= p + TOLERANCE])
    assert probs[kept].sum() >= p - TOLERANCE
    tokens = Sampler(top_p=p)(np.tile(logits, (50, 1)), np.random.default_rng(0))
    assert np.all(above[tokens] < p + TOLERANCE)


def test_top_p_example():
    """probs 0.5, 0.3, 0.15, 0.05 with p = 0.7: 0.5 alone falls short, 0.3 crosses, so the
    nucleus is the first two; p = 0.5 is reached by the first token alone."""
    logits = np.log([[0.5, 0.3, 0.15, 0.05]])
    assert np.isfinite(top_p_filter(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.5)).tolist() == [[True, False, False, False]]


def test_filters_act_on_each_row_separately():
    """Batch rows (samples) with different distributions get their own k-th value and nucleus."""
    logits = np.log([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    assert np.isfinite(top_k_filter(logits, 1)).tolist() == [[True, False, False],
                                                             [False, False, True]]
    assert np.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False],
                                                               [False, True, True]]


@pytest.mark.parametrize("kwargs", [dict(temperature=-0.1), dict(temperature=float("nan")),
                                    dict(top_k=0), dict(top_p=0.0), dict(top_p=1.01)])
def test_sampler_rejects_bad_settings(kwargs):
    """Settings outside their range fail at construction, naming the setting."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Sampler(**kwargs)


def test_rows_sampled_together_equal_each_row_sampled_alone():
    """The server samples every active sequence in one pass, each with its own settings and
    generator: the tokens are those each row would draw alone."""
    from numpygpt.inference.sampling import sample_rows
    logits = np.random.default_rng(7).normal(size=(6, 50)) * 3
    samplers = [Sampler(), Sampler(temperature=0), Sampler(temperature=0.7, top_k=5),
                Sampler(top_p=0.8), Sampler(temperature=1.3, top_k=10, top_p=0.9), Sampler(top_k=1)]
    for seed in range(20):
        together = sample_rows(logits, samplers, [np.random.default_rng([seed, i]) for i in range(6)])
        alone = [s(logits[i:i + 1], np.random.default_rng([seed, i]))[0] for i, s in enumerate(samplers)]
        assert together.tolist() == list(alone)
