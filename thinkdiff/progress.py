"""Rate and ETA lines for long offline jobs (training, evaluation)."""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Prints ``done/total``, throughput and ETA at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, total: int, label: str, every_s: float = 30.0) -> None:
        self.total, self.label, self.every_s = total, label, every_s
        self.done = self.tokens = 0
        self.started = self.last = time.monotonic()

    def update(self, samples: int, tokens: int = 0) -> None:
        self.done += samples
        self.tokens += tokens
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = max(now - self.started, 1e-9)
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            print(f"{self.label}: {self.done}/{self.total} samples, {self.done / elapsed:.2f} samples/s, "
                  f"{self.tokens / elapsed:.1f} tokens/s, ETA {format_duration(eta)}", flush=True)
