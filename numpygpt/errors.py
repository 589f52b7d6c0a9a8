"""The errors a user can fix, and nothing else: what a command prints as its one error line.

Every command catches `UserError` in one place (numpygpt.commands) and prints
`numpygpt <command>: error: <message>`, exit code 2: the message says what is wrong and what
to do instead, so no traceback is ever needed. An exception that is not a UserError is a bug
and keeps its traceback.

The kinds say where the trouble is. Those that are also ValueError are bad values, so code
that validates with `except ValueError` catches them too.
"""


class UserError(Exception):
    """Something the user can fix; str(error) is the whole message."""


class ConfigError(UserError, ValueError):
    """A setting out of range or settings that do not fit together."""


class DataError(UserError):
    """Training or evaluation text that is missing, empty, undecodable or too short."""


class TokenizerError(UserError):
    """A tokenizer folder that cannot be read, or one that does not fit the model."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit."""


class FormatError(UserError, ValueError):
    """A file that is not what its name says (a safetensors file, a manifest, ...)."""


class HFError(UserError):
    """A Hugging Face folder or model name that cannot be read as GPT-2."""


class TrainingError(UserError):
    """A run that cannot go on (a non-finite loss); the message says what was kept."""


class DistError(UserError):
    """Processes that cannot train together (no mpi4py, a foreign mpiexec, diverged weights),
    or a rank that failed: then every rank raises it with that rank's message."""


class SweepError(UserError):
    """Bad sweep settings or storage."""
