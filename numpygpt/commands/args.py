"""What every command's arguments share: errors on one line, validators, help that helps.

    parser = ArgumentParser(prog="numpygpt sample")
    parser.add_argument("--top-p", type=real(above=0, high=1), default=1.0, help="...")

A bad value is `numpygpt sample: error: argument --top-p: must be a number in (0, 1], got 2
(see numpygpt sample --help)`, exit 2: never the usage block. `--help` prints each default
once, after the flag's help, and none for flags whose default is "not given".
"""
import argparse
import sys


def fail(prog: str, message: str, code: int = 2):
    """One line on stderr and exit `code`: what is wrong and what to do instead."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already names its default or
    there is none to name (None, False, a positional argument)."""

    def _get_help_string(self, action):
        help = action.help or ""
        no_default = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if no_default or "default" in help:
            return help
        return f"{help} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2) instead of the usage block and a line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        fail(self.prog, f"{message} (see {self.prog} --help)")


def _bounded(convert, what, low, high, above):
    """An argparse type: convert the text, then insist that it lies in the given range."""
    if above is not None:
        rule = f"in ({above}, {high}]" if high is not None else f"greater than {above}"
    elif low is not None:
        rule = f"in {low}..{high}" if high is not None else f"{low} or more"
    else:
        rule = f"{high} or less" if high is not None else "any"

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value != value or (above is not None and not value > above) or (low is not None and value < low) \
                or (high is not None and value > high):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {what} {rule}, got {text}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


def integer(low=None, high=None):
    """An integer in low..high (either end open when None)."""
    return _bounded(int, "an integer", low, high, None)


def real(low=None, high=None, above=None):
    """A finite number in low..high, or in (above, high] (either end open when None)."""
    def finite_float(text):
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value
    return _bounded(finite_float, "a number", low, high, above)


def folder(text):
    """An argparse type: a folder to write into, named by a non-empty path (an empty one
    would write into the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path")
    return text
