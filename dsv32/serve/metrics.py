"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters (requests by endpoint and status, prompt and generated tokens, cancelled requests),
gauges (requests in flight at the HTTP layer; the engine's running and waiting requests, read at
scrape time) and histograms (time to first token, request duration) with cumulative `le` buckets,
`_sum` and `_count`. One `Metrics` object per app; nothing is global.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

from dsv32.serve.backend import BackendStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PREFIX = "dsv32"


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip([*self.buckets, float("inf")], self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out += [f"{name}_sum {self.total!r}", f"{name}_count {self.count}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.cancelled = 0
        self.in_flight = 0
        self.ttft = Histogram()
        self.duration = Histogram()

    def request_done(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            if seconds is not None:
                self.duration.observe(seconds)

    def tokens(self, prompt: int, generated: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.generation_tokens += generated

    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def render(self, engine: BackendStats) -> str:
        p = PREFIX
        with self._lock:
            lines = [
                f"# HELP {p}_requests_total HTTP requests by endpoint and status code.",
                f"# TYPE {p}_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'{p}_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            for name, kind, text, value in (
                ("prompt_tokens_total", "counter", "Prompt tokens processed.", self.prompt_tokens),
                ("generation_tokens_total", "counter", "Tokens generated.", self.generation_tokens),
                ("cancelled_requests_total", "counter", "Requests whose client went away.", self.cancelled),
                ("requests_in_flight", "gauge", "Requests being answered now.", self.in_flight),
                (
                    "engine_running_requests",
                    "gauge",
                    "Requests in the engine's running batch.",
                    engine.running,
                ),
                ("engine_waiting_requests", "gauge", "Requests queued in the engine.", engine.waiting),
            ):
                lines += [f"# HELP {p}_{name} {text}", f"# TYPE {p}_{name} {kind}", f"{p}_{name} {value}"]
            for name, value in sorted(engine.extra.items()):
                lines += [f"# TYPE {p}_engine_{name} gauge", f"{p}_engine_{name} {value!r}"]
            for name, hist, text in (
                ("time_to_first_token_seconds", self.ttft, "Time from request to first generated token."),
                ("request_duration_seconds", self.duration, "Time from request to the last byte."),
            ):
                lines += [
                    f"# HELP {p}_{name} {text}",
                    f"# TYPE {p}_{name} histogram",
                    *hist.lines(f"{p}_{name}"),
                ]
        return "\n".join(lines) + "\n"
