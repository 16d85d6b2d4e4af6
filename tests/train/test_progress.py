"""Progress in a log file (stderr not a terminal): whole lines, one per epoch, no carriage-return frames."""
import io
import sys
from types import SimpleNamespace

import torch

from nptm.train.callbacks import Progress
from nptm.utils.progress import LineProgress, progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def fake_trainer(epochs=3, iters=50):
    return SimpleNamespace(device=torch.device("cpu"), is_main=True, epochs=epochs, iters_per_epoch=iters, epoch=0,
                           name="fit", iteration=0, history=[], schedule=SimpleNamespace(lr=lambda i: 0.1))


def run_fit(monkeypatch, stream):
    monkeypatch.setattr(sys, "stderr", stream)
    cb, t = Progress(refresh_every=1), fake_trainer()
    cb.on_fit_start(t)
    for epoch in range(t.epochs):
        t.epoch = epoch
        for step in range(t.iters_per_epoch):
            t.iteration += 1
            cb.on_step_end(t, step, torch.tensor(0.5))
        t.history.append({"epoch": epoch + 1, "test_top1": 0.25})
        cb.on_epoch_end(t, epoch)
    cb.on_fit_end(t)
    return stream.getvalue()


def test_trainer_progress_writes_one_line_per_epoch_to_a_log(monkeypatch):
    log = run_fit(monkeypatch, io.StringIO())
    assert "\r" not in log
    lines = log.splitlines()
    assert len(lines) == 4 and lines[0].startswith("fit: 50/150 it") and "test_top1=0.2500" in lines[0]
    assert lines[-1].startswith("fit: 150/150 it")


def test_a_terminal_still_gets_a_tqdm_bar(monkeypatch):
    assert "\r" in run_fit(monkeypatch, Tty())


def test_wrapped_iterable_writes_a_line_every_n_seconds(monkeypatch):
    clock = iter(range(0, 1000, 7))
    monkeypatch.setattr("nptm.utils.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = progress(range(10), total=10, desc="checking images", unit="img", file=out, every_s=20)
    assert isinstance(bar, LineProgress) and list(bar) == list(range(10))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[-1].startswith("checking images: 10/10 img")
    assert 2 <= len(lines) <= 5  # every ~3 items (7 s a tick, 20 s apart) and the closing line
