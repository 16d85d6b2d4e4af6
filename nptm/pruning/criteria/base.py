"""The criterion interface: a model's weights (and, for data-aware criteria, a calibration loader) in,
importance scores out. Higher scores are kept; the pruning algorithm (global or per-layer top-k,
structured channel groups) is separate and consumes the scores.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from nptm.utils.registry import Registry


class Criterion:
    """Subclass, set the class variables, implement ``scores``, and register with ``@CRITERIA.register(name)``.

    ``scores(model, params)`` gets parameter name -> weight. Unstructured criteria return one score per
    weight (same shape). Structured criteria get the weights of the layers that produce channels
    (output channels on dim 0) and return one float64 score per output channel, shape ``[w.shape[0]]``;
    the structured engine sums them over the producers of a channel group.
    """

    name: ClassVar[str] = ""
    structured: ClassVar[bool] = False
    needs_data: ClassVar[bool] = False  # True: ``scores`` needs ``loader`` (calibration batches)
    random: ClassVar[bool] = False  # True: a random baseline (the papers compare methodical criteria with it)

    def scores(self, model: nn.Module, params: Mapping[str, Tensor], *, loader: Iterable | None = None,
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        raise NotImplementedError


CRITERIA: Registry[type[Criterion]] = Registry("criterion", entry_point_group="nptm.criteria",
                                               package="nptm.pruning.criteria")


def uniform_scores(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform random scores on ``like``'s device, drawn from ``generator`` (on its own device) when given."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=dev, dtype=dtype).to(like.device)


def check_finite(params: Mapping[str, Tensor]) -> None:
    """Refuse NaN weights with the names of the tensors holding them."""
    nan = [n for n, w in params.items() if bool(w.isnan().any())]
    if nan:
        raise ValueError(f"NaN weights in {nan}")


class NoCalibrationData(ValueError):
    """A data-aware criterion got no calibration batches."""


def require_batches(loader: Iterable | None, criterion: Criterion) -> Iterator:
    """The batches of ``loader``; a one-line error when there is none or it is empty."""
    if loader is None:
        raise NoCalibrationData(f"criterion {criterion.name or type(criterion).__name__} needs calibration batches (loader=...)")
    seen = False
    for batch in loader:
        seen = True
        yield batch
    if not seen:
        raise NoCalibrationData(f"criterion {criterion.name or type(criterion).__name__}: the calibration loader is empty")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode inside the block, its former mode restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def owner_modules(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Module]:
    """Parameter name (``a.b.weight``) -> the module holding it (``a.b``)."""
    return {n: model.get_submodule(n.rpartition(".")[0]) for n in params}
