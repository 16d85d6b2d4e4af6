"""The HTML/markdown report of one or more studies (the tables: ``nptm.study.tables``).

Folders whose studies differ only in their seeds (and how they ran) are merged: their records pool into
one set of tables and figures, so seeds run on several machines report together. A study of units reports
what has finished and lists the units still missing.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nptm.study.records import fill_dense_top1, spread
from nptm.study.store import PLAN_FILE, UnitStore
from nptm.study.tables import report_tables
from nptm.utils.errors import UserError
from nptm.utils.files import atomic_write

IGNORED = {"training": ("seeds", "device", "threads", "dist_timeout"), "data": ("workers",)}  # and "output"


class ReportError(UserError):
    """A folder that holds no study; the CLI prints it as one line and exits with status 2."""


@dataclass
class StudyResults:
    """The config and records of a study folder (or of several merged: those that differ only in seeds)."""

    name: str  # the folder names it was read from
    config: dict[str, Any]
    records: list[dict[str, Any]]
    folders: list[Path] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # planned runs not finished yet ("run (kind)")
    duplicates: list[str] = field(default_factory=list)  # what merging dropped, in words


def load_study(folder: Path) -> StudyResults:
    """A study folder's config and records; an interrupted study has fewer records and no table.txt."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise ReportError(f"{folder}: no config.json (not a study folder)") from None
    except (OSError, ValueError) as e:
        raise ReportError(f"{folder}: unreadable config.json ({e})") from None
    if (folder / PLAN_FILE).is_file():  # a study of units: each finished unit's result.json, in plan order
        records, missing = _unit_records(folder)
        return StudyResults(folder.name, config, records, [folder], [not missing], missing)
    try:
        records = json.loads((folder / "results.json").read_text())
    except FileNotFoundError:
        records = []  # killed before its first run finished
    except (OSError, ValueError) as e:
        raise ReportError(f"{folder}: unreadable results.json ({e})") from None
    return StudyResults(folder.name, config, records, [folder], [(folder / "table.txt").is_file()])


def _unit_records(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        plan = json.loads((folder / PLAN_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{folder}: unreadable {PLAN_FILE} ({e})") from None
    records, missing, store = [], [], UnitStore(folder)
    for unit in plan:
        try:
            result = store.result(unit["id"])
        except (OSError, ValueError) as e:
            raise ReportError(f"{store.folder(unit['id'])}: unreadable result ({e})") from None
        if result is None:
            missing.append(f"{unit['run']} ({unit['kind']})")
        elif result.get("record") is not None:
            records.append(result["record"])
    return fill_dense_top1(records), missing


def _identity(config: dict[str, Any]) -> str:
    kept = {sec: {k: v for k, v in values.items() if k not in IGNORED.get(sec, ())}
            for sec, values in config.items() if sec not in ("output", "execution")}
    return json.dumps(kept, sort_keys=True)


def merge_studies(studies: list[StudyResults]) -> list[StudyResults]:
    """Studies that differ only in seeds (or runtime settings) pooled into one; a run seen twice counts once: the
    first folder's record is kept (``duplicates`` says which were dropped)."""
    merged: dict[str, StudyResults] = {}
    for s in studies:
        key = _identity(s.config)
        if key not in merged:
            merged[key] = StudyResults(s.name, s.config, [], [], [])
        m = merged[key]
        seen = {r["run"] for r in m.records}
        dropped = [r["run"] for r in s.records if r["run"] in seen]
        if dropped:
            m.duplicates.append(f"{s.name}: {len(dropped)} run(s) already read from {m.name} left out, e.g. "
                                f"{dropped[0]} (the folder given first wins)")
        if m.folders:
            m.name += f" + {s.name}"
        m.records += [r for r in s.records if r["run"] not in seen]
        m.folders += s.folders
        m.finished += s.finished
        m.missing += s.missing
    return list(merged.values())


def _dense_line(records) -> str:
    dense = [100 * r["top1"] for r in records if r["kind"] == "dense"]
    if not dense:
        return "dense model: not finished"
    return f"dense model: {spread(dense)} top-1 % over {len(dense)} seed(s)"


def _status(study: StudyResults) -> str:
    done = sum(study.finished)
    runs = len(study.records)
    state = "finished" if done == len(study.finished) else f"INTERRUPTED ({len(study.finished) - done} of " \
                                                            f"{len(study.finished)} folder(s) unfinished)"
    missing = f"; {len(study.missing)} planned unit(s) missing: {', '.join(study.missing[:8])}" + \
        (", ..." if len(study.missing) > 8 else "") if study.missing else ""
    merged = f"; merged: {'; '.join(study.duplicates)}" if study.duplicates else ""
    return f"{runs} run(s) recorded, {state}{missing}{merged}"


def _models(records) -> list[tuple[str, str, str, str]]:
    """(run, top-1 %, model file, the command that deploys it) of every run that wrote a model file."""
    return [(r["run"], f"{100 * r['top1']:.2f}", r["model_file"] + (f" (+ {r['deployed_file']})" if r.get(
        "deployed_file") else ""), r.get("deploy_command", "")) for r in records if r.get("model_file")]


MODELS_TITLE = "Deployable models (paths in the study folder: run the commands there)"


def render_markdown(studies: list[StudyResults], figures: dict[str, list[Path]], out: Path) -> str:
    lines = ["# nptm report", ""]
    for s in studies:
        lines += [f"## {s.name}", "", f"{_status(s)}. {_dense_line(s.records)}. Cells: top-1 % mean ± std over "
                  "seeds; **bold**: best in its column.", ""]
        for t in report_tables(s.records):
            lines += [f"### {t.title}", "", f"| {t.corner} | " + " | ".join(t.columns) + " |",
                      "|---" * (len(t.columns) + 1) + "|"]
            for i, (label, cells) in enumerate(t.rows):
                text = [f"**{c}**" if (i, j) in t.best else c for j, c in enumerate(cells)]
                lines.append(f"| {label} | " + " | ".join(text) + " |")
            lines.append("")
        if _models(s.records):
            lines += [f"### {MODELS_TITLE}", "", "| run | top-1 % | model file | deploy with |", "|---|---|---|---|",
                      *(f"| {r} | {t} | `{f}` | `{c}` |" for r, t, f, c in _models(s.records)), ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures.get(s.name, [])]
        lines += ["", "<details><summary>config</summary>", "", "```json", json.dumps(s.config, indent=1), "```",
                  "", "</details>", ""]
    return "\n".join(lines)


CSS = ("body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}table{border-collapse:collapse;"
       "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,"
       "th:first-child{text-align:left}td.best{font-weight:bold;background:#e6f4e6}img{max-width:100%;"
       "display:block;margin:1em 0}pre{background:#f6f6f6;padding:.5em;overflow:auto}")


def render_html(studies: list[StudyResults], figures: dict[str, list[Path]]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nptm report</title><style>{CSS}</style>"
             "</head><body><h1>nptm report</h1>"]
    for s in studies:
        parts.append(f"<h2>{e(s.name)}</h2><p>{e(_status(s))}. {e(_dense_line(s.records))}. Cells: top-1 % mean ± "
                     "std over seeds; best in its column highlighted.</p>")
        for t in report_tables(s.records):
            head = "".join(f"<th>{e(c)}</th>" for c in [t.corner, *t.columns])
            body = "".join("<tr><td>" + e(label) + "</td>" + "".join(
                f"<td class='best'>{e(c)}</td>" if (i, j) in t.best else f"<td>{e(c)}</td>"
                for j, c in enumerate(cells)) + "</tr>" for i, (label, cells) in enumerate(t.rows))
            parts.append(f"<h3>{e(t.title)}</h3><table><tr>{head}</tr>{body}</table>")
        if _models(s.records):
            rows = "".join(f"<tr><td>{e(r)}</td><td>{e(t)}</td><td><code>{e(f)}</code></td><td><code>{e(c)}</code></td>"
                           "</tr>" for r, t, f, c in _models(s.records))
            parts.append(f"<h3>{e(MODELS_TITLE)}</h3><table><tr><th>run</th><th>top-1 %</th><th>model file</th>"
                         f"<th>deploy with</th></tr>{rows}</table>")
        for p in figures.get(s.name, []):
            data = base64.b64encode(p.read_bytes()).decode()
            parts.append(f"<img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>")
        parts.append(f"<details><summary>config</summary><pre>{e(json.dumps(s.config, indent=1))}</pre></details>")
    parts.append("</body></html>")
    return "".join(parts)


def build_report(folders: list[Path], out: Path, log: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.html`` (self-contained) and ``out/report.md`` (figures under ``out/figures``, or beside
    results.json when ``out`` is the one study folder reported); ``log`` is told what was read, merged and drawn."""
    from nptm.study.plots import write_plots

    log = log or (lambda line: None)
    read = []
    for f in folders:
        read.append(load_study(f))
        s = read[-1]
        log(f"read {f}: {len(s.records)} run(s)" + (f", {len(s.missing)} planned unit(s) missing" if s.missing else "")
            + ("" if all(s.finished) else ", unfinished"))
    studies = merge_studies(read)
    for s in studies:
        for line in s.duplicates:
            log(f"merged {line}")
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[Path]] = {}
    for i, s in enumerate(studies):
        if s.records:  # a single study reported into its own folder: the figures beside its results.json
            own = len(s.folders) == 1 and s.folders[0].resolve() == out.resolve()
            folder = out if own else out / "figures" / (
                f"{i + 1}-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s.name))
            folder.mkdir(parents=True, exist_ok=True)
            log(f"plotting {s.name} ({len(s.records)} run(s)) into {folder}")
            figures[s.name] = write_plots(folder, s.records)
    html_path, md_path = out / "report.html", out / "report.md"
    text = render_html(studies, figures).encode()
    atomic_write(html_path, lambda f: f.write(text))
    md = render_markdown(studies, figures, out).encode()
    atomic_write(md_path, lambda f: f.write(md))
    return html_path, md_path
