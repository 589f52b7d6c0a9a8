"""Continuous batching: every active sequence advances by one token per model step, and
requests join or leave the batch between steps.

One worker thread owns the model (its layers keep activations between forward and backward,
so no other thread may run it). Each turn of its loop it
  1. admits waiting requests while there are free slots for all their choices: the prompt is
     prefilled once into one slot and copied into the slots of the other choices (a request
     that echoes its prompt has the prompt scored first; one with max_tokens 0 needs no slot);
  2. draws the next token of every active sequence from its logits, all rows in one pass of
     NumPy (sampling.sample_rows), each with the sequence's own random generator, and hands
     the text to the request (a sequence that is finished, or whose client has gone, frees
     its slot here);
  3. runs one batched step over the sequences still active.
The model's matmuls are the cost of a step, and a step of 16 sequences costs little more than
a step of one; so throughput grows with concurrency instead of requests queueing.

Batching never changes a draw: each choice draws from a generator seeded by the request's
seed and the choice's index alone, and its logits are those of the model over its own tokens
(in float32, up to the last bit a batched matmul may round differently from a single row).

Nothing here knows about HTTP: a request is a prompt, settings and a callback that receives
`Piece`s from the worker thread.
"""
import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..inference.decoder import Decoder
from ..inference.sampling import log_softmax, sample_rows, scaled_logits
from ..inference.scoring import score_tokens
from .metrics import Metrics
from .text import CompletionText


class QueueFull(Exception):
    """More requests are waiting than the engine accepts; try again later."""


class NeverFits(ValueError):
    """A submission with more sequences than the engine could ever hold at once."""


@dataclass
class TokenLogprob:
    """A token's log-probability and the `top` most likely tokens at its place, most likely
    first, [(id, logprob)]. logprob is None for a prompt's first token (nothing predicts it)."""
    token: int
    logprob: float | None
    top: list


@dataclass
class Piece:
    """What the engine tells a request: text of one choice, and whether that choice finished.

    finish_reason: None while it goes on; "stop" (end of text or a stop sequence), "length"
    (max_tokens reached) or "error" (the engine failed; text says why).
    completion_tokens: tokens the choice has generated so far, its last one included.
    logprobs: for a request that asked for them, a TokenLogprob per token this piece adds
    (the prompt's tokens first, when it echoes the prompt).
    """

    index: int
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: list = field(default_factory=list)


@dataclass(eq=False)
class Request:
    """A prompt to continue `n` times.

    prompt: token ids (non-empty); sampler: e.g. sampling.Sampler; seed: None for fresh entropy.
    stop: stop sequences; on_piece(piece) is called from the worker thread for every Piece.
    logprobs: report each token's log-probability and this many alternatives (None: none).
    echo: the prompt comes first in the text (and, with logprobs, its tokens' log-probabilities).
    max_tokens 0 with echo scores the prompt alone.
    """

    prompt: list
    max_tokens: int
    sampler: object
    on_piece: object
    n: int = 1
    seed: int | None = None
    stop: tuple = ()
    logprobs: int | None = None
    echo: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = 0.0  # time.monotonic() when it was submitted

    def cancel(self):
        """Stop generating for this request; its slots are freed at the next step."""
        self.cancelled.set()

    def generator(self, index):
        """Choice `index`'s random generator: the same for the same seed, whatever else runs."""
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed % 2**64, index])


@dataclass(eq=False)
class Sequence:
    """One choice of a request while it holds a slot."""

    request: Request
    index: int
    slot: int
    rng: np.random.Generator
    text: CompletionText
    logits: np.ndarray
    generated: int = 0
    token: int = -1
    last_time: float = 0.0  # when its latest token (or its request) came


class Engine:
    """Continuous-batching text generation over a Decoder with `max_batch` slots.

    engine.start(); engine.submit([request, ...]); ...; engine.close()
    max_queue: requests that may wait while every slot is busy; submit raises QueueFull
    beyond it.
    stats(): slots, active and waiting sequences/requests, and model passes run so far.
    """

    def __init__(self, model, tokenizer, *, max_batch=16, max_queue=64, metrics=None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        self.model = model
        self.decoder = Decoder(model, max_batch)
        self.metrics = metrics or Metrics()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.n_vocab = tokenizer.n_vocab
        self.eot_token = tokenizer.eot_token
        self.decode_bytes = tokenizer.decode_bytes
        self.waiting = collections.deque()
        self.wakeup = threading.Condition()
        self.free = list(range(max_batch))
        self.active = []
        self.steps = 0  # batched decoding steps
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="numpygpt-engine", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        """Finish the worker thread; requests still running end with finish_reason 'error'."""
        with self.wakeup:
            self.closing = True
            self.wakeup.notify()
        if self.thread.is_alive():
            self.thread.join()

    def submit(self, requests):
        """Queue requests (all or none). Raises QueueFull (try later), NeverFits (more
        sequences than the engine holds), or ValueError for a bad request."""
        for request in requests:
            if not 1 <= request.n <= self.max_batch:
                raise ValueError(f"n must be in 1..{self.max_batch}, got {request.n}")
            if len(request.prompt) == 0:
                raise ValueError("the prompt is empty; give at least one token")
            if request.max_tokens < 0:
                raise ValueError(f"max_tokens must be 0 or more, got {request.max_tokens}")
            request.submitted = time.monotonic()
        sequences = sum(r.n for r in requests)
        if sequences > self.max_queue + self.max_batch:
            raise NeverFits(f"{sequences} sequences (prompts x n) are more than this server holds at once "
                            f"({self.max_batch} decoding and {self.max_queue} waiting); send fewer at a time")
        with self.wakeup:
            if self.closing:
                raise QueueFull("the server is shutting down")
            # Sequences may wait beyond the free slots (read without the worker's lock: a
            # slot freed a moment ago only makes the check stricter for one request).
            waiting = sum(r.n for r in self.waiting)
            if waiting + sequences > self.max_queue + len(self.free):
                raise QueueFull(f"every slot is busy and {waiting} sequences are waiting (the limit is "
                                f"{self.max_queue}); try again later")
            self.waiting.extend(requests)
            self.wakeup.notify()

    def stats(self):
        with self.wakeup:
            waiting = sum(r.n for r in self.waiting)
        return {"slots": self.max_batch, "active": len(self.active), "waiting": waiting,
                "steps": self.steps, "forward_calls": self.decoder.forward_calls}

    def _run(self):
        while True:
            with self.wakeup:
                while not (self.active or self.waiting or self.closing):
                    self.wakeup.wait()
                if self.closing:
                    break
                joining = self._admit()
            try:
                for request, slots in joining:
                    self._join(request, slots)
                self._sample()
                self._step()
            except Exception as e:  # noqa: BLE001 (a bug: fail the requests in flight, keep serving)
                self._fail_all(f"generation failed: {type(e).__name__}: {e}")
        self._fail_all("the server is shutting down")

    def _admit(self):
        """Waiting requests that fit the free slots, in order, each with its slots (under lock)."""
        joining = []
        while self.waiting and (self.waiting[0].cancelled.is_set() or self.waiting[0].max_tokens == 0 or
                                self.waiting[0].n <= len(self.free)):
            request = self.waiting.popleft()
            if request.cancelled.is_set():
                continue
            slots = []
            if request.max_tokens:  # max_tokens 0 only scores its prompt: no slot
                self.free.sort()  # the lowest slots first keeps the batch a view of the cache
                slots, self.free = self.free[:request.n], self.free[request.n:]
            joining.append((request, slots))
        return joining

    def _join(self, request, slots):
        """Echo the prompt if asked; prefill it into the first slot, copy it into the others."""
        self.metrics.prompt(len(request.prompt))
        if request.echo:
            echoed = self._prompt_logprobs(request) if request.logprobs is not None else []
            text = self.decode_bytes(request.prompt).decode("utf-8", errors="replace")
            for index in range(request.n):
                request.on_piece(Piece(index, text, None if slots else "length", 0, list(echoed)))
        elif not slots:
            for index in range(request.n):
                request.on_piece(Piece(index, "", "length", 0))
        if not slots:
            return
        logits = self.decoder.prefill([slots[0]], [request.prompt])[0]
        for index, slot in enumerate(slots):
            if index:
                self.decoder.copy(slots[0], slot)
            self.active.append(Sequence(request, index, slot, request.generator(index),
                                        CompletionText(self.decode_bytes, request.stop), logits,
                                        last_time=request.submitted))

    def _prompt_logprobs(self, request):
        """A TokenLogprob for each prompt token, the first with None: what numpygpt eval scores."""
        scores = score_tokens(self.model, request.prompt, top=request.logprobs)
        entries = [TokenLogprob(request.prompt[0], None, [])]
        for j in range(1, len(request.prompt)):
            top = [] if not request.logprobs else \
                [(int(i), -float(n)) for i, n in zip(scores.top_ids[j], scores.top_nats[j])]
            entries.append(TokenLogprob(request.prompt[j], -float(scores.token_nats[j]), top))
        return entries

    def _sample(self):
        """Draw every active sequence's next token in one pass; emit its text; release
        finished ones."""
        live = [seq for seq in self.active if not seq.request.cancelled.is_set()]
        self.free += [seq.slot for seq in self.active if seq.request.cancelled.is_set()]
        if not live:
            self.active = []
            return
        logits = np.stack([seq.logits[:self.n_vocab] for seq in live])
        samplers = [seq.request.sampler for seq in live]
        tokens = sample_rows(logits, samplers, [seq.rng for seq in live])
        asked = [i for i, seq in enumerate(live) if seq.request.logprobs is not None]
        logprobs = dict(zip(asked, log_softmax(scaled_logits(logits[asked], [samplers[i] for i in asked]))))
        now, still = time.monotonic(), []
        for i, seq in enumerate(live):
            request, token = seq.request, int(tokens[i])
            self.metrics.token(now - seq.last_time, first=seq.generated == 0)
            seq.generated, seq.last_time = seq.generated + 1, now
            finish = None
            if token == self.eot_token:
                text, finish = seq.text.close(), "stop"
            else:
                text = seq.text.push(token)
                if seq.text.stopped:
                    finish = "stop"
                elif seq.generated == request.max_tokens:
                    text, finish = text + seq.text.close(), "length"
            entries = [] if i not in logprobs else [token_logprob(token, logprobs[i], request.logprobs)]
            if text or finish or entries:
                request.on_piece(Piece(seq.index, text, finish, seq.generated, entries))
            if finish:
                self.free.append(seq.slot)
            else:
                seq.token = token
                still.append(seq)
        self.active = still

    def _step(self):
        if not self.active:
            return
        logits = self.decoder.step([s.slot for s in self.active], [s.token for s in self.active])
        for seq, row in zip(self.active, logits):
            seq.logits = row
        self.steps += 1

    def _fail_all(self, message):
        """End every running and waiting request with an 'error' piece; free all slots."""
        with self.wakeup:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for seq in self.active:
            seq.request.on_piece(Piece(seq.index, message, "error", seq.generated))
        for request in waiting:
            for index in range(request.n):
                request.on_piece(Piece(index, message, "error"))
        self.active = []
        self.free = list(range(self.max_batch))


def token_logprob(token: int, logprobs: np.ndarray, top: int) -> TokenLogprob:
    """token's entry from its row of log-probabilities (V,), with the `top` most likely."""
    best = np.argpartition(-logprobs, top - 1)[:top] if top else np.zeros(0, dtype=np.int64)
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return TokenLogprob(token, float(logprobs[token]), [(int(i), float(logprobs[i])) for i in best])
