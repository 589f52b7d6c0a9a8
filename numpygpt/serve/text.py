"""A completion's text, built token by token and cut where a stop sequence begins.

Text is streamed as it is generated, but a piece that might be the beginning of a stop
sequence cannot be sent yet: if the next tokens complete the stop sequence, it must never have
been shown. So the longest end of the text that is a prefix of some stop sequence is held
back until the next token decides it. Everything before that can never become part of a stop
sequence and is sent at once.
"""
from ..inference.generate import TextStream


class CompletionText:
    """Token ids in, text that is safe to show out; `stopped` once a stop sequence appeared.

    decode_bytes: ids -> bytes (a bpe.Tokenizer's); stop: the stop sequences (non-empty strings).
    """

    def __init__(self, decode_bytes, stop=()):
        self.chars = TextStream(decode_bytes)
        self.stop = tuple(stop)
        self.held = ""
        self.stopped = False

    def push(self, token):
        """The text `token` makes safe to show (maybe ''); after a stop sequence, nothing."""
        return self._release(self.chars.push(token))

    def close(self):
        """The rest: what was held back, and an unfinished character as U+FFFD."""
        return self._release(self.chars.close(), final=True)

    def _release(self, new, final=False):
        if self.stopped:
            return ""
        text = self.held + new
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped, self.held = True, ""
            return text[:min(cuts)]
        keep = 0 if final else self._longest_stop_prefix_at_end(text)
        self.held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def _longest_stop_prefix_at_end(self, text):
        """The length of the longest end of `text` that some stop sequence starts with."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest
