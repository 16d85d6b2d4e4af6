"""Export pruned models: ONNX (torch.export-based exporter, the TorchScript one as a fallback; opset 18, dynamic
batch) and torch.export programs (.pt2)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import torch
from torch import nn


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *, opset: int = 18) -> str:
    """Write ``model`` (eval mode) as one ONNX file with input ``input`` and output ``logits``, batch dynamic, through
    torch's ``torch.export``-based exporter; if that fails (or onnxscript is missing), through the TorchScript
    exporter, saying so in one line on stderr. Returns the exporter used: ``"dynamo"`` or ``"torchscript"``."""
    model.eval()
    x = example_input if example_input.shape[0] > 1 else example_input.expand(2, *example_input.shape[1:])  # 1: specialised
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), os.fspath(path), dynamo=True, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False,
                              verbose=False)
        return "dynamo"
    except Exception as e:  # noqa: BLE001  (the exporter raises many types)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        print(f"nptm.export: {os.fspath(path)}: the torch.export-based ONNX exporter failed ({type(e).__name__}: {reason}); "
              f"used the TorchScript exporter", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(model, (example_input,), os.fspath(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return "torchscript"


def export_program(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> torch.export.ExportedProgram:
    """``torch.export`` the model (eval mode) and save the program (``torch.export.load`` reads it)."""
    program = torch.export.export(model.eval(), (example_input,))
    torch.export.save(program, os.fspath(path))
    return program
