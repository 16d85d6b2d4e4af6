"""python -m nptm.export FILE (--onnx OUT.onnx | --torch-export OUT.pt2 | --sparse OUT.pt) [--model NAME] [--force]:
export a model saved with ``nptm.save_pruned`` (a study's ``models/<run>.pt``, or a unit's ``model.pt`` /
``pruned.pt``). Exit status: 0 done, 2 bad input (one line on stderr)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

OUTPUTS = (("onnx", "ONNX"), ("torch_export", "torch.export program"), ("sparse", "sparsified model"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nptm.export", description="Export a pruned model saved with "
                                "nptm.save_pruned (a study writes one per pruned run: OUT/models/<run>.pt).")
    p.add_argument("file", metavar="FILE", help="the pruned-model file (nptm.save_pruned; a study's models/<run>.pt)")
    p.add_argument("--model", help="architecture name (nptm.models.build_model; default: the one a study stored in "
                   "the file)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX file")
    p.add_argument("--torch-export", metavar="OUT.pt2", help="write a torch.export program")
    p.add_argument("--sparse", metavar="OUT.pt", help="write the model sparsified for CPU inference, its masks applied "
                   "(nptm.sparsify; read it with nptm.load_sparse)")
    p.add_argument("--num-classes", type=int, help="classes (default: the file's, else the size of its last bias)")
    p.add_argument("--input-size", type=int, help="height = width of the example input (default: the file's, else 32)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = p.parse_args(argv)
    if not (args.onnx or args.torch_export or args.sparse):
        p.error("give --onnx OUT.onnx, --torch-export OUT.pt2 and/or --sparse OUT.pt")
    return args


def training_checkpoint_hint(path: Path) -> str | None:
    """For a study's unit checkpoint (``units/<unit>/c1.pt``...): which model file holds its run's model."""
    unit = path.parent / "unit.json"
    if not unit.is_file() or path.parent.parent.name != "units":
        return None
    try:
        run = json.loads(unit.read_text())["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from nptm.study.deploy import model_file  # noqa: PLC0415  (a __main__ may import the study)

    final = path.parent.parent.parent / model_file(run)
    there = "" if final.is_file() else " (not written yet: the run has not finished, or ran with --no-save-models)"
    return (f"{path} is a training checkpoint of run {run}, not a model file; export {final}{there} "
            f"(or the unit's pruned.pt / model.pt)")


def main(argv=None) -> int:
    args = parse_args(argv)
    from nptm.export import export_onnx, export_program
    from nptm.models import build_model
    from nptm.pruning.structured import load_pruned, read_pruned

    outputs = [(getattr(args, k), what) for k, what in OUTPUTS if getattr(args, k)]
    try:
        hint = training_checkpoint_hint(Path(args.file))
        if hint:
            raise ValueError(hint)
        for out, _ in outputs:
            if os.path.lexists(out) and not args.force:
                raise ValueError(f"{out} exists; give --force to overwrite it")
        payload = read_pruned(args.file)
        shapes, info = payload["shapes"], payload.get("info") or {}
        name = args.model or info.get("model")
        if not name:
            raise ValueError(f"{args.file} does not name its architecture; give --model NAME")
        last = list(shapes)[-1]
        num_classes = args.num_classes or info.get("num_classes") or (shapes[last][0] if last.endswith("bias") else None)
        if num_classes is None:
            raise ValueError(f"{args.file}: cannot tell the number of classes from {last}; give --num-classes")
        in_channels, *size = info.get("input_shape") or [next(s[1] for s in shapes.values() if len(s) == 4), 32, 32]
        if args.input_size:
            size = [args.input_size, args.input_size]
        x = torch.zeros(1, in_channels, *size)
        model, masks = load_pruned(build_model(name, num_classes, in_channels), args.file, example_input=x,
                                   with_masks=True)
        model.eval()
        if args.onnx:
            export_onnx(model, x, args.onnx)
        if args.torch_export:
            export_program(model, x, args.torch_export)
        if args.sparse:
            from nptm.sparse import save_sparse, sparsify

            save_sparse(sparsify(model, torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), masks), args.sparse)
    except (OSError, ValueError, KeyError, StopIteration, RuntimeError) as e:
        print(f"python -m nptm.export: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    for out, what in outputs:
        print(f"wrote {out} ({what} of {name}, {os.path.getsize(out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
