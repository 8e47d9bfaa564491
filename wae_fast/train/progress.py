"""A one-line progress bar for the training loop."""
from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on a terminal (silent otherwise; the epoch summary is logged anyway)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.total, self.desc, self.stream = total, desc, stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0
        self.start = time.time()

    def update(self, n: int, read_terms) -> None:
        """``read_terms()`` gives the running means; it is called only when the bar is redrawn."""
        now = time.time()
        if not self.enabled or (now - self.last < 0.2 and n < self.total):
            return
        self.last = now
        filled = int(20 * n / self.total)
        text = " ".join(f"{k} {v:.4g}" for k, v in read_terms().items())
        self.stream.write(f"\r{self.desc} [{'=' * filled}{' ' * (20 - filled)}] {n}/{self.total} "
                          f"{text} ({now - self.start:.1f}s)\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
