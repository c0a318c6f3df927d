"""Progress that suits where it is shown: a bar on a terminal, plain lines in a log.

``progress(stage, total, enabled)`` gives one object per stage. On a terminal (stderr is
a TTY) it is one tqdm bar with the current model in its description and an ETA. In a log,
under CI or in a pipe it writes one line when the stage starts, a line at most every
``LOG_EVERY_S`` seconds (and at each tenth of the work) while it runs, and one when it
ends, with no cursor escapes. Disabled (``-q``), it writes nothing, notes included.
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress", "Progress", "LOG_EVERY_S"]

LOG_EVERY_S = 30.0


class Progress:
    """Progress of one stage over ``total`` units (models); see the module docstring."""

    def __init__(self, stage: str, total: int, *, enabled: bool = True, unit: str = "model",
                 stream=None, tty: bool | None = None):
        self.stage, self.total, self.unit = stage, int(total), unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = (tty if tty is not None
                    else bool(getattr(self.stream, "isatty", lambda: False)()))
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._last_tenth = 0
        self._bar = None
        if not enabled or self.total == 0:
            return
        if self.tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=stage, unit=unit, file=self.stream,
                             dynamic_ncols=True, leave=True)
        else:
            self._line(f"{stage}: {self.total} {unit}(s) to do")

    def advance(self, item: str = "", note: str = "", n: int = 1) -> None:
        """Count ``n`` finished units; ``item`` (e.g. a model id) names the latest."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            if item:
                self._bar.set_description_str(f"{self.stage} {item}".strip())
            note = ", ".join(part for part in (note, self._failed_text()) if part)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        tenth = int(10 * self.done / max(self.total, 1))
        if now - self._last_line >= LOG_EVERY_S or tenth > self._last_tenth \
                or self.done == self.total:
            self._last_tenth = tenth
            self._last_line = now
            elapsed = now - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            extra = f" ({item}{', ' + note if note else ''})" if item else ""
            failed = f", {self._failed_text()}" if self.failed else ""
            self._line(f"{self.stage}: {self.done}/{self.total} {self.unit}(s) in "
                       f"{elapsed:.0f} s, about {eta:.0f} s left{failed}{extra}")

    def fail(self, n: int = 1) -> None:
        """Count ``n`` finished units that failed. They are counted, never named: the
        stage's summary names each failed model once, with its reason."""
        self.failed += n
        self.advance(n=n)

    def _failed_text(self) -> str:
        return f"{self.failed} failed" if self.failed else ""

    def note(self, text: str) -> None:
        """A message for the user (a stale lock taken over, a model refused)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"{self.stage}: {text}", file=self.stream)
        else:
            self._line(f"{self.stage}: {text}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(stage: str, total: int, enabled: bool = True, **kwargs) -> Progress:
    return Progress(stage, total, enabled=enabled, **kwargs)
