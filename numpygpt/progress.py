"""The one status line every long job shows (training, preparing shards, learning a BPE).

On a terminal the line is redrawn in place (at most 10 times a second); in a log file or a
pipe it is printed as a line of its own at most every 10 seconds, so logs stay short.
Messages (an evaluation, a sample) are lines of their own that the status line never
overwrites.

    progress = Progress()
    progress.status(f"{bar(0.37)} 37% | 120/325 MB")   # as often as you like
    progress.message("step 250: val loss 4.82")
    progress.close()                                   # ends the status line
"""
import sys
import time

TTY_INTERVAL_S = 0.1
LOG_INTERVAL_S = 10.0


def bar(fraction: float, width: int = 24) -> str:
    """`[#########...............]` for a fraction done in [0, 1]."""
    done = int(width * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * done}{'.' * (width - done)}]"


def format_seconds(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """A status line on `stream` (stderr). quiet: show nothing (a data-parallel run's ranks
    other than 0, a sweep's trials)."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.last = -float("inf")
        self.drawn = False  # a status line is on the terminal, not yet ended

    def status(self, text: str, force: bool = False):
        """Show `text` as the status line, unless one was shown too recently (force: always)."""
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < (TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S)):
            return
        self.last = now
        if self.tty:
            self.stream.write("\r" + text + "\033[K")
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str):
        """A line of its own, written above the status line."""
        if self.quiet:
            return
        self.stream.write(("\r\033[K" if self.drawn else "") + text + "\n")
        self.stream.flush()
        if self.drawn:
            self.drawn = False
            self.last = -float("inf")  # bring the status line back at the next update

    def close(self):
        """End the status line, so what is printed next starts on a line of its own."""
        if self.drawn and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self.drawn = False
