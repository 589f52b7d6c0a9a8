"""The serving engine without HTTP (tests/test_decoder.py checks its slot cache): batching never
changes a seeded completion; stop sequences never leak into the text; cancelled requests free
their slots."""
import threading

import pytest

import bpe
from numpygpt.config import GPTConfig
from numpygpt.inference.generate import generate
from numpygpt.model import GPT
from numpygpt.inference.sampling import Sampler
from numpygpt.serve.scheduler import Engine, NeverFits, QueueFull, Request
from numpygpt.serve.text import CompletionText

TOLERANCE = 1e-10
EOT = 256


def byte_tokenizer():
    """Every byte a token of its own, plus <|endoftext|>: multi-byte characters split."""
    return bpe.Tokenizer([bytes([b]) for b in range(256)] + [b"<|endoftext|>"], [],
                         {"<|endoftext|>": EOT})


def tiny_model(dtype="float64", vocab_size=37, block_size=8):
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2,
                       n_embd=12, dtype=dtype)
    model = GPT(config, seed=1)
    model.params.data *= 5.0  # distinct logits, so a wrong row cannot pass for a right one
    return model


class Collector:
    """on_piece for a Request: gathers each choice's text and finish, `done` when all ended."""

    def __init__(self, n):
        self.texts, self.finish, self.tokens = [""] * n, [None] * n, [0] * n
        self.done = threading.Event()
        self.first = threading.Event()

    def __call__(self, piece):
        self.texts[piece.index] += piece.text
        self.first.set()
        if piece.finish_reason:
            self.finish[piece.index] = piece.finish_reason
            self.tokens[piece.index] = piece.completion_tokens
            if all(self.finish):
                self.done.set()

    def result(self):
        assert self.done.wait(60), "the engine did not finish the request"
        return list(zip(self.texts, self.finish, self.tokens))


def make_requests(specs):
    requests = []
    for prompt, max_tokens, n, seed, sampler, stop in specs:
        requests.append(Request(prompt=prompt, max_tokens=max_tokens, n=n, seed=seed,
                                sampler=sampler, stop=stop, on_piece=Collector(n)))
    return requests


SPECS = [  # prompt, max_tokens, n, seed, sampler, stop
    ([72, 105], 20, 1, 1, Sampler(temperature=1.5), ()),
    ([65] * 7, 40, 3, 2, Sampler(top_p=0.9), ()),
    ([10, 20, 30], 3, 1, 3, Sampler(temperature=0), ()),
    ([EOT], 25, 2, 4, Sampler(temperature=2.0, top_k=50), ("a", "bc")),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 30, 1, 5, Sampler(), ()),
]


def run_engine(model, max_batch, together):
    """Each SPECS request's result, submitted all at once or one after another."""
    engine = Engine(model, byte_tokenizer(), max_batch=max_batch, max_queue=len(SPECS)).start()
    try:
        requests = make_requests(SPECS)
        if together:
            engine.submit(requests)
            results = [r.on_piece.result() for r in requests]
        else:
            results = []
            for request in requests:
                engine.submit([request])
                results.append(request.on_piece.result())
        return results, engine.stats()
    finally:
        engine.close()


def test_batched_completions_equal_one_at_a_time_with_fewer_model_passes():
    """Requests of every shape (n > 1, stop sequences, slides of the 32-token window, greedy
    and sampled) decoded together give exactly the texts they give alone, in fewer passes."""
    model = tiny_model(vocab_size=257, block_size=32)
    alone, alone_stats = run_engine(model, max_batch=3, together=False)
    batched, batched_stats = run_engine(model, max_batch=8, together=True)
    assert batched == alone
    assert {finish for result in alone for _, finish, _ in result} == {"stop", "length"}
    assert batched_stats["forward_calls"] < alone_stats["forward_calls"] / 2
    assert batched_stats["active"] == 0 and batched_stats["waiting"] == 0


def test_a_completion_is_what_generate_samples_with_the_choice_generator():
    """n = 1 and no stop: the engine's tokens are generate()'s with the same generator."""
    model = tiny_model(vocab_size=257, block_size=16)
    tok = byte_tokenizer()
    sampler = Sampler(temperature=3.0)
    request, = make_requests([([104, 105], 40, 1, 7, sampler, ())])
    engine = Engine(model, tok, max_batch=2).start()
    try:
        engine.submit([request])
        (text, finish, n_tokens), = request.on_piece.result()
    finally:
        engine.close()
    tokens = [int(t[0]) for t in generate(model, [104, 105], max_new_tokens=40, sampler=sampler,
                                          rng=request.generator(0), stop_token=EOT,
                                          n_vocab=tok.n_vocab) if t[0] >= 0]
    assert n_tokens == len(tokens) + (finish == "stop")
    assert text == tok.decode(tokens)


def test_a_cancelled_request_frees_its_slot_and_a_waiting_one_takes_it():
    model = tiny_model(vocab_size=257, block_size=16)
    engine = Engine(model, byte_tokenizer(), max_batch=1, max_queue=1).start()
    try:
        long, short = make_requests([([1], 10**6, 1, 0, Sampler(), ()),
                                     ([2], 5, 1, 0, Sampler(), ())])
        engine.submit([long])
        assert long.on_piece.first.wait(30)
        engine.submit([short])
        with pytest.raises(QueueFull):  # one slot busy, one request waiting: the queue is full
            engine.submit(make_requests([([3], 5, 1, 0, Sampler(), ())]))
        long.cancel()
        assert short.on_piece.result()[0][1] == "length"
        assert engine.stats()["active"] == 0
    finally:
        engine.close()


def test_bad_requests_are_refused_at_submit():
    engine = Engine(tiny_model(vocab_size=257), byte_tokenizer(), max_batch=2)
    for spec, message in [(([1], 5, 3, 0, Sampler(), ()), "n must be"),
                          (([], 5, 1, 0, Sampler(), ()), "empty"),
                          (([1], -1, 1, 0, Sampler(), ()), "max_tokens")]:
        with pytest.raises(ValueError, match=message):
            engine.submit(make_requests([spec]))
    # More sequences than 2 slots and 64 waiting could ever hold: refused for good, not "later".
    with pytest.raises(NeverFits, match="67 sequences"):
        engine.submit(make_requests([([1], 5, 1, 0, Sampler(), ())] * 67))


def pieces(tokens, stop, close=True):
    text = CompletionText(byte_tokenizer().decode_bytes, stop)
    shown = [text.push(t) for t in tokens]
    return shown + [text.close()] if close else shown, text.stopped


def test_text_that_may_start_a_stop_sequence_waits_for_the_next_token():
    """'ab' might become the stop 'abc': held back; 'abd' cannot, so it is shown whole."""
    shown, stopped = pieces(b"xabd", ["abc"])
    assert shown == ["x", "", "", "abd", ""] and not stopped


def test_text_ends_before_the_earliest_stop_sequence():
    shown, stopped = pieces(b"one. two! three", [" three", "!"], close=False)
    assert "".join(shown) == "one. two" and stopped
    assert shown[-1] == ""  # nothing after the stop


def test_a_stop_sequence_may_end_inside_a_multibyte_character():
    """'é' arrives as two byte tokens; the stop 'é' matches once the character is whole."""
    shown, stopped = pieces(list("café au lait".encode()), ["é"], close=False)
    assert "".join(shown) == "caf" and stopped


def test_at_the_end_held_back_text_is_shown():
    shown, stopped = pieces(b"the en", ["end"])
    assert "".join(shown) == "the en" and shown[-1] == "en" and not stopped
