"""The structured engine fuzzed by generated graphs (graph_gen.py, oracle in fuzz_oracle.py): no crash, no
mismatch, every outcome kind reached. The long run: python benchmarks/fuzz_structured.py --graphs N."""
import os
import sys
import warnings
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from fuzz_oracle import check  # noqa: E402

SETTINGS = dict(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int, onnx: bool = False) -> Counter:
    seen = Counter()

    @settings(max_examples=examples, **SETTINGS)
    @given(st.integers(0, 2**31 - 1))
    def one(seed):
        seen[check(seed, onnx=onnx)] += 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one()
    finally:
        torch.set_num_threads(threads)
    return seen


def test_generated_graphs_prune_or_refuse_never_crash_or_differ():
    seen = fuzz(1500)
    assert set(seen) == {"pruned", "kept whole", "refused"} and seen["pruned"] > seen.total() // 2, seen


def test_generated_pruned_models_export_to_onnx():
    pytest.importorskip("onnxruntime")
    assert fuzz(15, onnx=True)["pruned"] > 5
