"""``torch_threads``: torch's intra-op thread count set for a block and restored after it."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None or 0: leave the count as it is)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)
