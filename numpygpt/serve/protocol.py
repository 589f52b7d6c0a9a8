"""The bodies of OpenAI's completions API: the request as a pydantic model, the responses,
stream chunks and errors as the dicts OpenAI's clients parse.

A prompt is a string, a list of strings, a list of token ids, or a list of such lists (one
completion each), as OpenAI's legacy completions API takes them. `logprobs: k` reports each
token's log-probability and the k most likely tokens at its place, and `echo` returns the
prompt in front (with its tokens' log-probabilities, the first one null): with `max_tokens: 0`
that scores a prompt, which is how evaluation harnesses use the API. Parameters this server
cannot honour (penalties, best_of, ...) are refused with a 400 when given a value other than
their default, rather than silently ignored. `top_k` is an extension most OpenAI-compatible
servers accept.
"""
import time
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

MAX_STOP_SEQUENCES = 4

MAX_LOGPROBS = 20

NonEmptyText = Annotated[str, Field(min_length=1)]
Probability = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    max_tokens: Annotated[StrictInt, Field(ge=0)] = 16
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 1.0
    top_p: Probability = 1.0
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1)] = 1
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Annotated[StrictInt, Field(ge=-2**63, lt=2**64)] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    echo: StrictBool = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    # OpenAI's, not supported here: accepted only at their defaults.
    best_of: StrictInt | None = None
    suffix: str | None = None
    logit_bias: dict | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def unsupported(self):
        """The name of a parameter set to something this server cannot do, or None."""
        defaults = {"suffix": None, "presence_penalty": 0.0, "frequency_penalty": 0.0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                return name
        if self.best_of not in (None, 1):
            return "best_of"
        if self.logit_bias:
            return "logit_bias"
        return None

    @property
    def prompts(self) -> list:
        """Each prompt: a string, or a list of token ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return self.prompt

    @property
    def stops(self):
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def error_body(message, *, type="invalid_request_error", param=None, code=None):
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def completion_id():
    return f"cmpl-{uuid.uuid4().hex}"


def choice(index, text, finish_reason, logprobs=None):
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def logprobs(entries, token_text, offsets):
    """OpenAI's logprobs object for scheduler.TokenLogprob entries: tokens, token_logprobs,
    top_logprobs ({token: logprob}) and text_offset (offsets: where each token's text begins
    in the choice's text). token_text: id -> str."""
    return {"tokens": [token_text(e.token) for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [None if e.logprob is None else {token_text(i): lp for i, lp in e.top} for e in entries],
            "text_offset": offsets}


class TokenizeRequest(BaseModel):
    """POST /tokenize, as vLLM names it."""
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    prompt: str


class DetokenizeRequest(BaseModel):
    """POST /detokenize."""
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    tokens: list[Annotated[StrictInt, Field(ge=0)]]


def completion(id, model, choices, usage):
    """The whole response (stream: false). choices: dicts from `choice`, in index order."""
    return {"id": id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_card(name, created):
    return {"id": name, "object": "model", "created": created, "owned_by": "numpygpt"}
