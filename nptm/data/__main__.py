"""``python -m nptm.data write --source KIND:PATH --out FILE.beton``: dataset conversion for FFCV."""
from __future__ import annotations

import argparse
import sys

from nptm.data.registry import DataError
from nptm.data.write import WRITE_MODES, convert, writable_kinds


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m nptm.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    w = sub.add_parser("write", help="convert a dataset to an FFCV .beton file",
                       description="Convert a dataset to an FFCV .beton file (fields: image, label).")
    w.add_argument("--source", metavar="KIND:PATH",
                   help=f"KIND in {', '.join(writable_kinds())}; imagefolder:DIR has one sub-folder of images per class, "
                        "cifar10:DIR / cifar100:DIR the python pickles, digits needs no path")
    w.add_argument("--out", metavar="FILE.beton")
    w.add_argument("--split", default="train", help="train | test (cifar, digits; digits also 'all'); "
                                                     "image folders: point --source at the split's folder")
    w.add_argument("--max-resolution", type=int, default=500, help="longest side kept (0: no resizing)")
    w.add_argument("--jpeg-quality", type=int, default=90)
    w.add_argument("--compress-probability", type=float, default=0.5,
                   help="share of images stored as JPEG in 'proportion' mode")
    w.add_argument("--write-mode", choices=WRITE_MODES, default=None,
                   help="default: proportion for image folders, raw for cifar/digits")
    w.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    w.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)  # unknown options and bad values are reported before missing ones
    missing = [f"--{name}" for name in ("source", "out") if getattr(args, name) is None]
    if missing:
        p.error(f"write needs {' and '.join(missing)}")
    try:
        r = convert(args.source, args.out, split=args.split, write_mode=args.write_mode,
                    max_resolution=args.max_resolution, jpeg_quality=args.jpeg_quality,
                    compress_probability=args.compress_probability, workers=args.workers, force=args.force)
    except DataError as e:
        print(f"python -m nptm.data: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or full output location
        print(f"python -m nptm.data: error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {r['written']} images ({r['classes']} classes, {r['write_mode']}) from {r['source']} "
          f"to {r['out']}; skipped {r['skipped']} unreadable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
