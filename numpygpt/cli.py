"""What every command line here shares: a bad input is one error line and a non-zero exit."""
import argparse
import sys


def fail(prog: str, message: str, code: int = 1):
    """One line on stderr and exit `code`: what is wrong and what to do instead."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (exit 2) instead of the usage block and a line."""

    def error(self, message):
        fail(self.prog, f"{message} (see --help)", code=2)
