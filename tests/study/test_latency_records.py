"""What a study records of a run's CPU inference: the median and min-max latency of the deployed and the dense model,
the measured speedup with its round-by-round spread, the per-layer choices, both models' graphs frozen; and the tables that print the spread."""
import torch

from nptm.models import build_model
from nptm.pruning import prune_unstructured
from nptm.study.measure import DenseBaseline, inference_latency
from nptm.study.records import measured_speedups, summary_table
from nptm.study.tables import speed_table


def test_inference_latency_records_spread_and_choices():
    torch.manual_seed(0)
    model = build_model("digits_net", 10, 1).eval()
    masks = prune_unstructured(model, "magnitude", 0.9, include_linear=True)
    base = DenseBaseline.of("digits_net", 10, 1, 8, include_linear=True)
    out = inference_latency(model, masks, base, [1, 4], dense=build_model("digits_net", 10, 1))
    names = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(out["sparse_choices"]) == names and all(isinstance(v, bool) for v in out["sparse_choices"].values())
    assert (out["inference_engine"] == "nptm.sparse") == out["deployed_note"].endswith("layers sparse")
    assert out["latency_graph"] == "frozen"  # both models timed as TorchScript graphs (nptm.sparse.freeze)
    for b in (1, 4):
        for who in ("", "dense_"):
            assert out[f"latency_{who}b{b}_min_ms"] <= out[f"latency_{who}b{b}_ms"] <= out[f"latency_{who}b{b}_max_ms"]
        assert out[f"measured_speedup_b{b}_min"] <= out[f"measured_speedup_b{b}"] <= out[f"measured_speedup_b{b}_max"]
    assert measured_speedups(out) == {1: out["measured_speedup_b1"], 4: out["measured_speedup_b4"]}


def _record(pruner, speedups):
    rec = {"run": pruner, "kind": "retrain", "seed": 0, "pruner": pruner, "sparsity_target": 0.9, "schedule": "FT",
           "epochs": 1, "top1": 0.5, "sparsity": 0.9, "params_nonzero": 10, "flops_effective": 100, "speedup": 5.0,
           "time_total_s": 1.0, "inference_engine": "nptm.sparse"}
    for b, (mid, lo, hi) in speedups.items():
        rec[f"measured_speedup_b{b}"] = mid
        if lo is not None:
            rec |= {f"measured_speedup_b{b}_min": lo, f"measured_speedup_b{b}_max": hi}
    return rec


def test_tables_show_the_spread():
    records = [_record("magnitude", {1: (2.0, 1.5, 2.5), 64: (1.2, 1.1, 1.4)}),
               _record("magnitude", {1: (3.0, 2.8, 3.5), 64: (1.0, 0.9, 1.3)}),
               _record("random", {1: (1.5, None, None)})]  # written before the spread was kept
    table = speed_table(records)
    assert table.rows[0] == ("magnitude, 0.9", ["-", "5.00x", "2.50x (1.50-3.50)", "1.10x (0.90-1.40)",
                                                "nptm.sparse"])
    assert table.rows[1][1][2:4] == ["1.50x", "-"]
    text = summary_table(records)
    assert "2.50x (1.50-3.50)/1.10x (0.90-1.40)" in text and "1.50x/-" in text


class ByBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * (2 if x.shape[0] == 1 else 3)


def test_a_model_the_trace_cannot_follow_is_timed_as_it_is():
    base = DenseBaseline.of("digits_net", 10, 1, 8, include_linear=True)
    out = inference_latency(ByBatch().eval(), None, base, [1])
    assert out["latency_graph"].startswith("eager: freeze: the traced graph of ByBatch computes something else")
    assert out["latency_b1_ms"] > 0
