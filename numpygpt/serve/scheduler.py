"""Continuous batching: every active sequence advances by one token per model step, and
requests join or leave the batch between steps.

One worker thread owns the model. Each turn of its loop it
  1. admits waiting requests while there are free slots for all their choices: the prompt is
     prefilled once into one slot and copied into the slots of the other choices;
  2. draws the next token of every active sequence from its logits, with the sequence's own
     random generator, and hands the text to the request (a sequence that is finished, or
     whose client has gone, frees its slot here);
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
from dataclasses import dataclass, field

import numpy as np

from ..inference.decoder import Decoder
from .text import CompletionText


class QueueFull(Exception):
    """More requests are waiting than the engine accepts; try again later."""


@dataclass
class Piece:
    """What the engine tells a request: text of one choice, and whether that choice finished.

    finish_reason: None while it goes on; "stop" (end of text or a stop sequence), "length"
    (max_tokens reached) or "error" (the engine failed; text says why).
    completion_tokens: tokens the choice has generated so far, its last one included.
    """

    index: int
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


@dataclass(eq=False)
class Request:
    """A prompt to continue `n` times.

    prompt: token ids (non-empty); sampler: e.g. sampling.Sampler; seed: None for fresh entropy.
    stop: stop sequences; on_piece(piece) is called from the worker thread for every Piece.
    """

    prompt: list
    max_tokens: int
    sampler: object
    on_piece: object
    n: int = 1
    seed: int | None = None
    stop: tuple = ()
    cancelled: threading.Event = field(default_factory=threading.Event)

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


class Engine:
    """Continuous-batching text generation over a Decoder with `max_batch` slots.

    engine.start(); engine.submit([request, ...]); ...; engine.close()
    max_queue: requests that may wait while every slot is busy; submit raises QueueFull
    beyond it.
    stats(): slots, active and waiting sequences/requests, and model passes run so far.
    """

    def __init__(self, model, tokenizer, *, max_batch=16, max_queue=64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        self.decoder = Decoder(model, max_batch)
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
        """Queue requests (all or none). Raises QueueFull, or ValueError for n > max_batch."""
        for request in requests:
            if not 1 <= request.n <= self.max_batch:
                raise ValueError(f"n must be in 1..{self.max_batch}, got {request.n}")
            if len(request.prompt) == 0:
                raise ValueError("the prompt is empty; give at least one token")
            if request.max_tokens < 1:
                raise ValueError(f"max_tokens must be at least 1, got {request.max_tokens}")
        with self.wakeup:
            if self.closing:
                raise QueueFull("the server is shutting down")
            # Requests may wait beyond the free slots (read without the worker's lock: a
            # slot freed a moment ago only makes the check stricter for one request).
            if len(self.waiting) + len(requests) > self.max_queue + len(self.free):
                raise QueueFull(f"every slot is busy and {len(self.waiting)} requests are "
                                f"waiting (the limit is {self.max_queue}); try again later")
            self.waiting.extend(requests)
            self.wakeup.notify()

    def stats(self):
        with self.wakeup:
            waiting = len(self.waiting)
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
        while self.waiting and (self.waiting[0].cancelled.is_set() or
                                self.waiting[0].n <= len(self.free)):
            request = self.waiting.popleft()
            if not request.cancelled.is_set():
                self.free.sort()  # the lowest slots first keeps the batch a view of the cache
                slots, self.free = self.free[:request.n], self.free[request.n:]
                joining.append((request, slots))
        return joining

    def _join(self, request, slots):
        """Prefill the prompt into the first slot, copy it into the others."""
        logits = self.decoder.prefill([slots[0]], [request.prompt])[0]
        for index, slot in enumerate(slots):
            if index:
                self.decoder.copy(slots[0], slot)
            self.active.append(Sequence(request, index, slot, request.generator(index),
                                        CompletionText(self.decode_bytes, request.stop), logits))

    def _sample(self):
        """Draw each active sequence's next token; emit its text; release finished ones."""
        still = []
        for seq in self.active:
            request = seq.request
            if request.cancelled.is_set():
                self.free.append(seq.slot)
                continue
            token = int(request.sampler(seq.logits[None, :self.n_vocab], seq.rng)[0])
            seq.generated += 1
            finish = None
            if token == self.eot_token:
                text, finish = seq.text.close(), "stop"
            else:
                text = seq.text.push(token)
                if seq.text.stopped:
                    finish = "stop"
                elif seq.generated == request.max_tokens:
                    text, finish = text + seq.text.close(), "length"
            if text or finish:
                request.on_piece(Piece(seq.index, text, finish, seq.generated))
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
