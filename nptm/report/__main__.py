"""``python -m nptm.report RUN_DIR [RUN_DIR...] [--out DIR]``: report.html and report.md of one or more
studies (default --out: the single RUN_DIR, else ./report). Exit status 2 with one line on bad input."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nptm.study.report import ReportError, build_report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nptm.report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=Path, help="study folders (from python -m nptm.train)")
    p.add_argument("--out", type=Path, help="where report.html, report.md and figures/ go")
    args = p.parse_args(argv)
    out = args.out or (args.run_dirs[0] if len(args.run_dirs) == 1 else Path("report"))
    try:
        html_path, md_path = build_report(args.run_dirs, out, log=lambda line: print(line, flush=True))
    except ReportError as e:
        print(f"nptm.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"nptm.report: error: {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"report: {html_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
