"""python -m nptm.export FILE --model NAME (--onnx OUT.onnx | --torch-export OUT.pt2 | --sparse OUT.pt): export a model
saved with ``nptm.save_pruned``. Exit status: 0 done, 2 bad input (one line on stderr)."""
from __future__ import annotations

import argparse
import sys

import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nptm.export", description="Export a pruned model saved with nptm.save_pruned.")
    p.add_argument("file", metavar="FILE", help="the pruned-model file (nptm.save_pruned / --save-models)")
    p.add_argument("--model", required=True, help="architecture name (nptm.models.build_model)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX file")
    p.add_argument("--torch-export", metavar="OUT.pt2", help="write a torch.export program")
    p.add_argument("--sparse", metavar="OUT.pt", help="write the model sparsified for CPU inference, its masks applied "
                   "(nptm.sparsify; read it with nptm.load_sparse)")
    p.add_argument("--num-classes", type=int, help="classes (default: the size of the file's last bias)")
    p.add_argument("--input-size", type=int, default=32, help="height = width of the example input (default: 32)")
    args = p.parse_args(argv)
    if not (args.onnx or args.torch_export or args.sparse):
        p.error("give --onnx OUT.onnx, --torch-export OUT.pt2 and/or --sparse OUT.pt")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from nptm.export import export_onnx, export_program
    from nptm.models import build_model
    from nptm.pruning.structured import load_pruned, read_pruned

    try:
        shapes = read_pruned(args.file)["shapes"]
        last = list(shapes)[-1]
        num_classes = args.num_classes or (shapes[last][0] if last.endswith("bias") else None)
        if num_classes is None:
            raise ValueError(f"{args.file}: cannot tell the number of classes from {last}; give --num-classes")
        in_channels = next(s[1] for s in shapes.values() if len(s) == 4)
        x = torch.zeros(1, in_channels, args.input_size, args.input_size)
        model, masks = load_pruned(build_model(args.model, num_classes, in_channels), args.file, example_input=x,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
