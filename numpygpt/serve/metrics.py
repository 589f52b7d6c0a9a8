"""What the server has done, in Prometheus' text format (`GET /metrics`): counters of requests
by status and of tokens, gauges of the queue and the slots, and histograms of the time to the
first token and between tokens. Written out by hand: a few dozen lines, no client library.
"""
import bisect
import threading

# Seconds: from a few milliseconds (a small model's step) to a minute (a long prompt queued).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: above every bucket
        self.total = 0.0

    def observe(self, value: float):
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        lines, cumulative = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        return lines + [f"{name}_sum {self.total}", f"{name}_count {cumulative}"]


class Metrics:
    """Thread-safe: the engine's thread and the event loop both record."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}  # HTTP status -> responses sent
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.time_to_first_token = Histogram()
        self.time_per_token = Histogram()

    def response(self, status: int):
        with self.lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def prompt(self, tokens: int):
        with self.lock:
            self.prompt_tokens += tokens

    def token(self, seconds_since_previous: float, first: bool):
        """A token generated, `seconds_since_previous` after the request arrived (first) or
        after the sequence's token before it."""
        with self.lock:
            self.generated_tokens += 1
            (self.time_to_first_token if first else self.time_per_token).observe(seconds_since_previous)

    def render(self, gauges: dict) -> str:
        """The text format; gauges: {name: (help, value)} read at the moment of the scrape."""
        with self.lock:
            out = ["# HELP numpygpt_requests_total HTTP responses, by status code.",
                   "# TYPE numpygpt_requests_total counter"]
            out += [f'numpygpt_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            for name, help, value in (("generated_tokens_total", "Tokens generated.", self.generated_tokens),
                                      ("prompt_tokens_total", "Prompt tokens read.", self.prompt_tokens)):
                out += [f"# HELP numpygpt_{name} {help}", f"# TYPE numpygpt_{name} counter", f"numpygpt_{name} {value}"]
            for name, (help, value) in gauges.items():
                out += [f"# HELP numpygpt_{name} {help}", f"# TYPE numpygpt_{name} gauge", f"numpygpt_{name} {value}"]
            for name, help, histogram in (
                    ("time_to_first_token_seconds", "From a request's arrival to its first token.",
                     self.time_to_first_token),
                    ("time_per_output_token_seconds", "Between two tokens of one sequence.", self.time_per_token)):
                out += [f"# HELP numpygpt_{name} {help}", f"# TYPE numpygpt_{name} histogram",
                        *histogram.lines(f"numpygpt_{name}")]
        return "\n".join(out) + "\n"
