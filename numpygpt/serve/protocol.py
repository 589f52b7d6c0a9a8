"""The bodies of OpenAI's completions API: the request as a pydantic model, the responses,
stream chunks and errors as the dicts OpenAI's clients parse.

Parameters this server cannot honour (echo, logprobs, penalties, ...) are refused with a 400
when given a value other than their default, rather than silently ignored. `top_k` is an
extension most OpenAI-compatible servers accept.
"""
import time
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

MAX_STOP_SEQUENCES = 4

NonEmptyText = Annotated[str, Field(min_length=1)]
Probability = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | Annotated[list[str], Field(min_length=1)]
    max_tokens: Annotated[StrictInt, Field(ge=1)] = 16
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] = 1.0
    top_p: Probability = 1.0
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1)] = 1
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Annotated[StrictInt, Field(ge=-2**63, lt=2**64)] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI's, not supported here: accepted only at their defaults.
    echo: StrictBool = False
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: str | None = None
    logit_bias: dict | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def unsupported(self):
        """The name of a parameter set to something this server cannot do, or None."""
        defaults = {"echo": False, "logprobs": None, "suffix": None, "presence_penalty": 0.0,
                    "frequency_penalty": 0.0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                return name
        if self.best_of not in (None, 1):
            return "best_of"
        if self.logit_bias:
            return "logit_bias"
        return None

    @property
    def prompts(self):
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

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


def choice(index, text, finish_reason):
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def completion(id, model, choices, usage):
    """The whole response (stream: false). choices: dicts from `choice`, in index order."""
    return {"id": id, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage}


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def model_card(name, created):
    return {"id": name, "object": "model", "created": created, "owned_by": "numpygpt"}
