"""torch.distributed for training: join the process group torchrun describes, wrap models in DDP, and
make every rank take rank 0's decisions (pruned weights and masks, checkpoints, the resolved config).

Launch with ``torchrun`` (it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); without it,
or with one process, nothing here communicates. NCCL on CUDA (rank r uses cuda:LOCAL_RANK), gloo on the
CPU. Every collective has the timeout given to ``start``, so a crashed or stuck peer ends the run with
``DistributedError`` instead of a hang. An error that one rank meets inside ``from_rank0``/``all_ok``
(bad data, an unwritable output folder, a corrupt checkpoint) is raised on every rank, marked ``shared`` so that
only rank 0 prints it.
"""
from __future__ import annotations

import datetime
import os
import pickle
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nptm.utils.errors import UserError

T = TypeVar("T")
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


class DistributedError(RuntimeError):
    """A peer process crashed, vanished or timed out; the CLI exits with status 3."""


@dataclass(frozen=True)
class Session:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this session initialized the process group (and destroys it)


def env_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) without it."""
    values = []
    for name, default in zip(ENV, ("0", "0", "1")):
        text = os.environ.get(name, default)
        try:
            values.append(int(text))
        except ValueError:
            raise UserError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from None
    rank, local, world = values
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"environment: RANK={rank} is not within WORLD_SIZE={world}")
    return rank, local, world


class DeviceError(UserError):
    """A device that cannot be used here; ``str()`` says why, naming it."""


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """A device name as a torch.device ('auto': cuda when available); with several processes 'auto'/'cuda' mean
    cuda:LOCAL_RANK. DeviceError when it cannot be used here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{name}: CUDA is not available here")
        if world_size > 1:
            if dev.index is not None:
                raise DeviceError(f"{name}: under torchrun each process uses cuda:LOCAL_RANK; use cuda")
            dev = torch.device("cuda", local_rank)
        if (dev.index or 0) >= torch.cuda.device_count():
            raise DeviceError(f"{dev}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def start(device: str, timeout_s: float) -> Session:
    """Resolve the device and, under torchrun with several processes, join the process group."""
    rank, local, world = env_world()
    dev = resolve_device(device, local, world)
    if world == 1 or dist.is_initialized():
        return Session(rank, local, world, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError, a missing MASTER_ADDR, ...
        raise DistributedError(f"rank {rank} of {world} could not join the others ({describe(e)}); check that all "
                               f"{world} processes started and MASTER_ADDR/MASTER_PORT") from None
    return Session(rank, local, world, dev, owns_group=True)


def stop(session: Session) -> None:
    """Leave the process group. Gloo's worker threads outlive it: a process that then tears its interpreter down
    can abort in one of them (``nptm.study.exits.end`` ends the command line without that teardown)."""
    if session.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# -- errors ----------------------------------------------------------------------------------------
COMM_FAILURE = re.compile(r"gloo|nccl|connection (closed|reset|refused)|timed out|timeout|c10d|socket|broken pipe",
                          re.IGNORECASE)


def describe(e: BaseException) -> str:
    """The first line of an error, without the C++ source location gloo/NCCL put in front."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". This is typically")[0]


def is_comm_failure(e: BaseException) -> bool:
    return isinstance(e, getattr(dist, "DistError", ())) or (isinstance(e, RuntimeError) and bool(COMM_FAILURE.search(str(e))))


def comm_failure(e: BaseException) -> DistributedError:
    rank, size = world()
    return DistributedError(f"rank {rank} of {size} lost contact with its peers ({describe(e)}); another process "
                            f"crashed, was killed or stalled longer than the process-group timeout: check its log")


def _portable(e: BaseException) -> BaseException:
    try:
        return pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def _shared(e: BaseException, origin: int) -> BaseException:
    e.shared, e.origin_rank = True, origin
    return e


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_rank0(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only; every rank returns its result or raises its exception."""
    rank, size = world()
    if size == 1:
        return fn()
    error, result = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as e:
            error = e
    ok, value = broadcast_object((True, result) if error is None else (False, _portable(error)))
    if ok:
        return value
    raise _shared(error if rank == 0 else value, 0)


def all_ok(fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if any rank fails, every rank raises the lowest failing rank's error."""
    rank, size = world()
    if size == 1:
        return fn()
    error, result = None, None
    try:
        result = fn()
    except Exception as e:
        error = e
    errors = [None] * size
    dist.all_gather_object(errors, None if error is None else _portable(error))
    failed = [r for r, e in enumerate(errors) if e is not None]
    if not failed:
        return result
    raise _shared(error if rank == failed[0] else errors[failed[0]], failed[0])


# -- models ----------------------------------------------------------------------------------------
def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train (it broadcasts rank 0's weights)."""
    if world()[1] == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def broadcast_module(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank; refuses ranks whose architectures differ."""
    if world()[1] == 1:
        return
    state = model.state_dict()
    signature = [(n, tuple(t.shape), str(t.dtype)) for n, t in state.items()]
    signatures = [None] * world()[1]
    dist.all_gather_object(signatures, signature)
    if any(s != signatures[0] for s in signatures):
        bad = next(r for r, s in enumerate(signatures) if s != signatures[0])
        raise DistributedError(f"rank {bad} built a different architecture than rank 0 (pruning diverged)")
    for t in state.values():
        dist.broadcast(t, src=0)


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics, which each rank updates from its own batches) on every rank."""
    if world()[1] > 1:
        for b in model.buffers():
            dist.broadcast(b, src=0)


@torch.no_grad()
def broadcast_masks(masks) -> None:
    """Overwrite every rank's masks (bool tensors, in place) with rank 0's."""
    if masks is None or world()[1] == 1:
        return
    for name in masks:
        m = masks[name]
        as_bytes = m.to(torch.uint8)  # not every backend reduces/broadcasts bool
        dist.broadcast(as_bytes, src=0)
        m.copy_(as_bytes.bool())


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return t


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, by rank."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    dist.all_gather_object(out, obj)
    return out
