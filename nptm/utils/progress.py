"""Progress that a log file can hold: a tqdm bar when the stream is a terminal, otherwise plain lines (no
carriage returns) every ``every_s`` seconds, on each refreshing ``set_postfix`` (once an epoch) and at the end."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable


class LineProgress:
    """The part of tqdm's interface nptm uses, writing whole lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", file=None, every_s: float = 60.0, **_):
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.file, self.every_s = file or sys.stderr, every_s
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, object] = {}
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every_s:
            self.write()

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix = {k: v for k, v in kw.items()}
        if refresh:
            self.write()

    def write(self) -> None:
        self.last = time.monotonic()
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc + ': ' if self.desc else ''}{done} {self.unit} [{self.last - self.start:.0f}s]{extra}",
              file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.write()


def progress(iterable: Iterable | None = None, *, file=None, every_s: float = 60.0, **kw):
    """``tqdm(iterable, file=file, **kw)`` when ``file`` (default stderr) is a terminal, else a ``LineProgress``."""
    file = file or sys.stderr
    if getattr(file, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(iterable, file=file, **kw)
    return LineProgress(iterable, file=file, every_s=every_s, **kw)
