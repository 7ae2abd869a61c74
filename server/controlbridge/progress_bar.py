"""A one-line progress bar for the terminal (plain lines when output is not a terminal)."""
import sys


class ProgressBar:
    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last = None

    def update(self, label: str, done: int, total: int, extra: str = "") -> None:
        total = max(total, 1)
        filled = int(self.width * done / total)
        line = f"{label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {extra}".rstrip()
        if self.tty:
            self.stream.write("\r" + line.ljust(79))
        elif (done, total) != self._last:
            self.stream.write(line + "\n")
        self._last = (done, total)
        self.stream.flush()

    def message(self, text: str) -> None:
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self._last is not None:
            self.stream.write("\n")
        self._last = None
