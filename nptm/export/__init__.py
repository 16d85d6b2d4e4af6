"""Export pruned models: ONNX (TorchScript exporter, opset 17, dynamic batch) and torch.export programs (.pt2)."""
from __future__ import annotations

import os
import warnings

import torch
from torch import nn


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *, opset: int = 17) -> None:
    """Write ``model`` (eval mode) as one ONNX file with input ``input`` and output ``logits``, batch dynamic."""
    model.eval()
    with warnings.catch_warnings():  # the torch.export-based exporter needs onnxscript, not a dependency
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding", UserWarning)
        torch.onnx.export(model, (example_input,), os.fspath(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def export_program(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike) -> torch.export.ExportedProgram:
    """``torch.export`` the model (eval mode) and save the program (``torch.export.load`` reads it)."""
    program = torch.export.export(model.eval(), (example_input,))
    torch.export.save(program, os.fspath(path))
    return program
