"""A one-line progress bar for the terminal; plain lines every few steps when output is not a terminal.

A log file or CI output cannot redraw a line, and one line per image looks stuck during a long job, so a
non-terminal gets a line when an image finishes and every `plain_every` steps in between.
"""
import sys


class ProgressBar:
    def __init__(self, stream=None, width: int = 30, plain_every: int = 5):
        self.stream = stream or sys.stderr      # looked up now: tests and callers may have replaced it
        self.width = width
        self.plain_every = plain_every
        self.tty = self.stream.isatty()
        self._last = None
        self._last_step = None

    def update(self, label: str, done: int, total: int, extra: str = "", step: int = 0, steps: int = 0) -> None:
        total = max(total, 1)
        filled = int(self.width * done / total)
        line = f"{label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {extra}".rstrip()
        if self.tty:
            self.stream.write("\r" + line.ljust(79))
        elif (done, total) != self._last or self._step_due(step, steps):
            self.stream.write(line + "\n")
            self._last_step = step
        self._last = (done, total)
        self.stream.flush()

    def _step_due(self, step: int, steps: int) -> bool:
        if not steps:
            return False
        if self._last_step is None or step < self._last_step:    # a new image or stage counts from 0 again
            return True
        return step - self._last_step >= self.plain_every or (step == steps and step != self._last_step)

    def message(self, text: str) -> None:
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._last is not None:
            self.stream.write("\n")
        self._last = None
        self._last_step = None
