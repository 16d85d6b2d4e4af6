"""Seeds derived from several integers (run seed, phase stream, epoch)."""
from __future__ import annotations

import numpy as np


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative ints, stable across processes and platforms."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)
