"""Pruned models on disk: a shape manifest, the state dict and optional masks, loadable with weights_only=True."""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from nptm.pruning.structured.graph import trace_channels
from nptm.pruning.structured.shrink import shrink_graph
from nptm.utils.loading import load_tensors

FORMAT = "nptm.pruned/1"


def save_pruned(model: nn.Module, path: str | os.PathLike, masks: Mapping[str, Tensor] | None = None, *,
                info: Mapping[str, object] | None = None) -> None:
    """Write ``{"format", "shapes": tensor -> shape, "state_dict", "masks", "info"}`` (atomically) for
    ``load_pruned``; ``info``: plain data about the model (a study stores its architecture name, classes and input
    shape there, which ``python -m nptm.export`` reads)."""
    dense = model.state_dict()
    state = {k: v.detach().cpu() for k, v in dense.items()}
    payload = {
        "metadata": {k: dict(v) for k, v in getattr(dense, "_metadata", {}).items()},  # module versions
        "format": FORMAT,
        "shapes": {k: list(v.shape) for k, v in state.items()},
        "state_dict": state,
        "masks": None if masks is None else {k: v.detach().cpu() for k, v in masks.items()},
        "info": dict(info or {}),
    }
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_pruned(path: str | os.PathLike) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
    payload = load_tensors(path, "cannot read pruned-model file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a pruned-model file ({FORMAT})")
    return payload


def load_pruned(model: nn.Module, path: str | os.PathLike, *, example_input: Tensor | None = None,
                with_masks: bool = False) -> nn.Module | tuple[nn.Module, dict[str, Tensor] | None]:
    """Shrink ``model`` (an unpruned instance of the saved architecture) to the file's manifest and load its
    weights; returns the new model (and the masks when ``with_masks``). A manifest that does not fit is
    refused with one line naming the first tensor that differs."""
    payload = read_pruned(path)
    shapes, where = payload["shapes"], os.fspath(path)
    dense = model.state_dict()
    for name in [*shapes, *dense]:
        if (name in shapes) != (name in dense):
            side = "the model" if name in shapes else "the file"
            raise ValueError(f"{where} does not fit {type(model).__name__}: tensor {name} is not in {side}")
    graph = trace_channels(model, example_input)
    keep = {}
    for g in graph.groups:
        fresh = [n for n, lab in graph.producers
                 if len(lab.segs) == 1 and graph.uf.find(lab.segs[0][0]) == g.id and lab.segs[0][2] == g.size]
        k = int(shapes[f"{fresh[0]}.weight"][0]) if fresh else g.size
        if not 0 < k <= g.size or k % g.blocks:
            raise ValueError(f"{where} does not fit {type(model).__name__}: tensor {fresh[0]}.weight has {k} channels "
                             f"where the model has {g.size}")
        if k < g.size:
            per = g.size // g.blocks
            keep[g.name] = (torch.arange(k // g.blocks)[None, :] + per * torch.arange(g.blocks)[:, None]).reshape(-1)
    try:
        new = shrink_graph(model, graph, keep)
    except ValueError as e:
        raise ValueError(f"{where} does not fit {type(model).__name__}: {e}") from None
    for name, t in new.state_dict().items():
        if list(t.shape) != list(shapes[name]):
            raise ValueError(f"{where} does not fit {type(model).__name__}: tensor {name} has shape "
                             f"{list(shapes[name])} in the file but {list(t.shape)} in the pruned model")
    state = OrderedDict(payload["state_dict"])
    state._metadata = OrderedDict(payload.get("metadata") or {})  # type: ignore[attr-defined]
    new.load_state_dict(state)
    return (new, payload["masks"]) if with_masks else new
