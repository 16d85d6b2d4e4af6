"""A study's deployable models: every pruned run's final model as ``models/<run>.pt`` (``nptm.save_pruned``: the
pruned shapes, masked weights as zeros, the masks, and the architecture, so ``python -m nptm.export FILE`` needs
nothing else), and with ``--deploy sparse|onnx`` its sparsified (``nptm.sparse.save_sparse``) or ONNX form beside it.
"""
from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from nptm.pruning import save_pruned

DEPLOY_FORMS = {"none": None, "sparse": ".sparse.pt", "onnx": ".onnx"}  # --deploy: what else a run writes


def model_info(model_name: str, num_classes: int, input_shape: Sequence[int]) -> dict[str, Any]:
    """What ``python -m nptm.export`` rebuilds the architecture from (stored in the file's ``info``)."""
    return {"model": model_name, "num_classes": int(num_classes), "input_shape": [int(s) for s in input_shape]}


def model_file(run: str) -> str:
    """A run's model file, relative to the study folder."""
    return f"models/{run.replace('/', '__')}.pt"


def deploy_command(path: Path | str, written: str = "none") -> str:
    """The command that writes a model file's deployable forms beside it (those ``--deploy`` has not written)."""
    stem = str(path)[:-len(".pt")] if str(path).endswith(".pt") else str(path)
    forms = [f"--{form} {shlex.quote(stem + suffix)}" for form, suffix in DEPLOY_FORMS.items()
             if suffix is not None and form != written]
    return f"python -m nptm.export {shlex.quote(str(path))} {' '.join(forms)}"


def write_deployable(out: Path, run: str, model: nn.Module, masks: Mapping[str, Tensor] | None, info: dict[str, Any],
                     deploy: str = "none") -> dict[str, Any]:
    """Write ``models/<run>.pt`` (and its ``deploy`` form); returns the record's fields: ``model_file``,
    ``deploy_command`` and, with ``deploy``, ``deployed_file`` (paths relative to ``out``)."""
    rel = model_file(run)
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pruned(model, path, masks, info=info)
    fields: dict[str, Any] = {"model_file": rel, "deploy_command": deploy_command(rel, deploy)}  # run in the study folder
    if DEPLOY_FORMS[deploy] is not None:
        target = rel[:-len(".pt")] + DEPLOY_FORMS[deploy]
        export_form(model, masks, info["input_shape"], deploy, out / target)
        fields["deployed_file"] = target
    return fields


def export_form(model: nn.Module, masks: Mapping[str, Tensor] | None, input_shape: Sequence[int], form: str,
                path: Path) -> None:
    """``form`` sparse: ``sparsify`` (masks applied, BN folded) then ``save_sparse``; onnx: ``export_onnx``."""
    model = copy.deepcopy(model).cpu().float().eval()
    cpu_masks = {n: m.cpu() for n, m in masks.items()} if masks is not None else None
    if cpu_masks is not None:
        from nptm.pruning import Masks

        Masks(cpu_masks).bind(model).apply(model)
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    if form == "sparse":
        from nptm.sparse import save_sparse, sparsify

        save_sparse(sparsify(model, x, cpu_masks), path)
    else:
        from nptm.export import export_onnx

        export_onnx(model, x, path)
