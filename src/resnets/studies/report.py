"""One page of every study in a directory: ``report.html`` (self-contained) and its Markdown twin ``report.md``.

Each instrument leaves ``NAME.json``, ``NAME.md`` and ``NAME-*.png`` in its output directory (see
:mod:`resnets.studies.runner`). :func:`write_report` first re-judges and re-renders every study from its
NAME.json alone (so a report made later equals the one ``resnets study all`` wrote, and a changed threshold
reaches old measurements), then gathers them into a summary of verdicts, each one click from its full text,
and one section per study. JSON files of an older layout or of unknown instruments are shown as they were
written. The HTML page carries everything inside itself (figures as base64 ``data:`` URIs, inline CSS, no
script, no network) so it can be mailed or archived as one file; a Content-Security-Policy forbids script and
remote loads as a second line of defence.

Every string read from JSON is untrusted: it is escaped, and the Markdown table is converted by a
Python-Markdown instance with raw HTML, links and images switched off, then checked against a tag allowlist.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import markdown

from resnets.errors import ConfigError
from resnets.io.atomic import atomic_write_text
from resnets.studies import STUDIES
from resnets.studies.job import JOB_RECORD
from resnets.studies.runner import FORMAT, rerender

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATUS = {True: "supported", False: "not supported", None: "undecided"}
SUMMARY_VERDICT_CHARS = 200  # the summary row shows this much of a verdict; the rest is one click away


@dataclass(frozen=True)
class Study:
    """What one ``NAME.json`` holds that a reader needs (the bulky ``numbers`` stay in the JSON)."""

    name: str
    claim: str
    verdict: str
    supported: bool | None
    settings: dict[str, Any]
    table: str
    figures: tuple[str, ...]
    command: str
    path: Path
    precision: str = ""  # what the study measured in ("fp32", "bf16 autocast"); "" where its JSON predates it
    data: str = ""  # the data sets its numbers came from

    @property
    def status(self) -> str:
        return STATUS[self.supported]

    @property
    def precision_label(self) -> str:
        return self.precision or "not recorded"


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote and what it had to leave out."""

    html: Path
    markdown: Path
    studies: tuple[str, ...]
    absent: tuple[str, ...]  # known studies with no NAME.json in the directory (corrupt ones are in skipped)
    skipped: tuple[str, ...] = field(default=())  # one line per unreadable JSON file


def load_study(path: str | Path) -> Study:
    """Read one study JSON; anything a report cannot use raises a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not readable JSON ({_one_line(error)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object written by `resnets study`, got {type(data).__name__}")
    missing = [key for key in ("claim", "verdict") if not isinstance(data.get(key), str)]
    if missing:
        raise ConfigError(f"{path}: not a study result (no text field {', '.join(missing)})")
    supported = data.get("supported")
    settings = data.get("settings") or {}
    figures = data.get("figures") or []
    if not (supported is None or isinstance(supported, bool)):
        raise ConfigError(f"{path}: 'supported' must be true, false or null, got {supported!r}")
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: 'settings' must be an object, got {type(settings).__name__}")
    if not isinstance(figures, list) or not all(isinstance(f, str) for f in figures):
        raise ConfigError(f"{path}: 'figures' must be a list of file names")
    precision = data.get("precision") or ""
    if not isinstance(precision, str):
        raise ConfigError(f"{path}: 'precision' must be text such as \"fp32\", got {precision!r}")
    return Study(
        name=path.stem,
        claim=data["claim"],
        verdict=data["verdict"],
        supported=supported,
        settings=settings,
        table=str(data.get("table") or ""),
        figures=tuple(figures),
        command=str(data.get("command") or ""),
        path=path,
        precision=precision,
        data=data_of(data, settings),
    )


def data_of(record: dict[str, Any], settings: dict[str, Any]) -> str:
    """The data sets a study's numbers came from: its trained runs' (as they recorded them), else the study's
    ``--data`` (its untrained nets' batches), else the default data set."""
    from resnets.studies.plans import DEFAULT_DATA

    numbers = record.get("numbers") if isinstance(record.get("numbers"), dict) else {}
    found: list[str] = []
    for key in ("trained", "trained_runs"):
        runs = numbers.get(key)
        if isinstance(runs, list):
            found += [str(r["data"]) for r in runs if isinstance(r, dict) and r.get("data")]
    if not found:
        found = [str(settings.get("data") or DEFAULT_DATA)]
    return ", ".join(dict.fromkeys(found))


def find_studies(directory: str | Path) -> tuple[list[Study], list[str]]:
    """The studies in ``directory`` (known ones in registry order, then unknown names sorted) and one message
    per JSON file that could not be read. ``runs/`` and other subdirectories are not searched."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory; run `resnets study NAME --out {directory}` first")
    order = {name: i for i, name in enumerate(STUDIES)}
    paths = sorted(
        (p for p in directory.glob("*.json") if p.name != JOB_RECORD),
        key=lambda p: (order.get(p.stem, len(order)), p.stem),
    )
    studies, skipped = [], []
    for path in paths:
        try:
            studies.append(load_study(path))
        except ConfigError as error:
            skipped.append(str(error))
    if not studies:
        found = f" (skipped: {'; '.join(skipped)})" if skipped else ""
        raise ConfigError(
            f"{directory} holds no study results (NAME.json){found}; run `resnets study NAME --out {directory}` first"
        )
    return studies, skipped


def write_report(directory: str | Path, out: str | Path | None = None) -> Report:
    """Re-judge and re-render every study in ``directory`` from its JSON, then write ``report.html`` (or
    ``out``) and its ``.md`` twin."""
    directory = Path(directory)
    html_path = Path(out) if out is not None else directory / "report.html"
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must name an .html file (its Markdown twin goes beside it), got {str(html_path)!r}")
    md_path = html_path.with_suffix(".md")
    present = {path.stem for path in directory.glob("*.json") if path.name != JOB_RECORD}  # corrupt: skipped
    if md_path.stem in present and md_path.parent.resolve() == directory.resolve():
        raise ConfigError(f"--out {html_path} would overwrite the study's own {md_path.name}; choose another name")
    not_rejudged = rejudge(directory)
    studies, skipped = find_studies(directory)
    skipped = [*not_rejudged, *skipped]
    absent = [name for name in STUDIES if name not in present]
    made = " ".join(filter(None, (_provenance(directory, len(studies)), job_line(directory))))
    atomic_write_text(html_path, render_html(studies, directory, made=made, absent=absent, skipped=skipped))
    atomic_write_text(
        md_path, render_markdown(studies, directory, md_path.parent, made=made, absent=absent, skipped=skipped)
    )
    return Report(html_path, md_path, tuple(s.name for s in studies), tuple(absent), tuple(skipped))


def rejudge(directory: Path) -> list[str]:
    """Re-judge and re-render every study of this version's layout in ``directory`` from its JSON; one line per
    study that could not be (it is then reported as it was written)."""
    problems = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # find_studies names it
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("name") not in STUDIES:
            continue  # an older layout or another instrument: reported as written
        try:
            rerender(path)
        except ConfigError as error:
            problems.append(f"not re-judged, shown as written: {error}")
    return problems


def job_line(directory: Path) -> str:
    """The wall time and compute of the ``resnets study all`` that filled ``directory`` ("" where none did)."""
    try:
        record = json.loads((directory / JOB_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return ""
    line = record.get("line") if isinstance(record, dict) else None
    return f"It was made by {_one_line(line)}." if isinstance(line, str) else ""


def _provenance(directory: Path, count: int) -> str:
    """One line: which package version (and commit) made the report, when, and from what."""
    from resnets import __version__
    from resnets.runs.directory import git_commit

    commit = git_commit()
    version = f"resnets {__version__}" + (f" (commit {commit[:10]})" if commit else "")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    noun = "study" if count == 1 else "studies"
    return f"Made by {version} on {when} from {count} {noun} in {directory.resolve()}."


# --- HTML -------------------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1b1f24;
 max-width:1120px;margin:0 auto;padding:24px 32px 64px;line-height:1.5;background:#fff}
h1{font-size:1.9em;margin:.2em 0}h2{margin-top:2.2em;padding-top:.6em;border-top:2px solid #d0d7de}
h3{font-size:1.05em;margin:1.4em 0 .4em;color:#444c56}
.made,.absent,.skipped{color:#57606a;font-size:.92em}.skipped{color:#9a3412}
.claim{background:#f6f8fa;border-left:4px solid #8c959f;padding:.6em 1em;margin:.8em 0}
.verdict{padding:.6em 1em;margin:.8em 0;border-left:4px solid}
.verdict.supported{background:#eefbf0;border-color:#1a7f37}.verdict.not-supported{background:#fff1f0;border-color:#cf222e}
.verdict.undecided{background:#fff8e5;border-color:#9a6700}
.badge{display:inline-block;white-space:nowrap;border-radius:1em;padding:0 .7em;font-size:.85em;font-weight:600;color:#fff}
.badge.supported{background:#1a7f37}.badge.not-supported{background:#cf222e}.badge.undecided{background:#9a6700}
.wrap{overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.88em}th,td{border:1px solid #d0d7de;padding:.3em .6em;vertical-align:top}
th{background:#f6f8fa;text-align:left}tbody tr:nth-child(even){background:#fafbfc}
.numbers td{font-variant-numeric:tabular-nums;white-space:nowrap}.numbers table{margin:.7em 0}
.summary td:nth-child(2){min-width:24em}.summary summary{cursor:pointer}.settings th{white-space:nowrap;font-weight:600}
.settings td{word-break:break-word}.settings code{font-size:.95em}
figure{margin:1em 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.85em;color:#57606a}
pre{background:#f6f8fa;padding:.7em 1em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}a{color:#0969da}
@media print{h2{break-before:page}figure{break-inside:avoid}.numbers td{white-space:normal}}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(
    studies: Sequence[Study],
    directory: str | Path,
    *,
    made: str = "",
    absent: Sequence[str] = (),
    skipped: Sequence[str] = (),
) -> str:
    """The self-contained page; figures are read from ``directory`` and embedded."""
    e = html.escape
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Residual network studies: {len(studies)} results</title><style>{CSS}</style></head><body>",
        "<h1>Why residual learning works: the measurements</h1>",
        f'<p class="made">{e(made)}</p>',
        f"<p>{e(_tally(studies))}</p>",
    ]
    mixed = mixed_precisions(studies)
    if mixed:
        parts.append(f'<p class="skipped"><strong>Mixed precisions.</strong> {e(mixed)}</p>')
    parts += [
        '<div class="wrap"><table class="summary"><thead>',
        "<tr><th>study</th><th>verdict</th><th>status</th><th>precision</th><th>data</th></tr></thead><tbody>",
    ]
    for s in studies:
        parts.append(
            f'<tr><td><a href="#study-{e(s.name)}">{e(s.name)}</a></td><td>{_verdict_cell(s.verdict)}</td>'
            f"<td>{_badge(s)}</td><td>{e(s.precision_label)}</td><td>{e(s.data)}</td></tr>"
        )
    parts.append("</tbody></table></div>")
    if absent:
        parts.append(f'<p class="absent">Not in this directory: {e(", ".join(absent))}.</p>')
    for line in skipped:
        parts.append(f'<p class="skipped">Skipped: {e(line)}</p>')
    for s in studies:
        parts += _section_html(s, Path(directory))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _section_html(s: Study, directory: Path) -> list[str]:
    e = html.escape
    css = s.status.replace(" ", "-")
    parts = [
        f'<section id="study-{e(s.name)}"><h2>{e(s.name)} {_badge(s)}</h2>',
        f'<div class="claim"><strong>Claim.</strong> {e(s.claim)}</div>',
        f'<div class="verdict {css}"><strong>Verdict ({e(s.status)}).</strong> {e(s.verdict)}</div>',
        f'<p class="made">Measured in {e(s.precision_label)} on {e(s.data or "data not recorded")}.</p>',
    ]
    if s.table.strip():
        parts += ["<h3>Key numbers</h3>", f'<div class="numbers">{table_html(s.table)}</div>']
    if s.figures:
        parts.append("<h3>Figures</h3>")
    for name in s.figures:
        data = _png(directory, name)
        if data is None:
            parts.append(f'<p class="skipped">Figure {e(name)} is missing or not a PNG.</p>')
        else:
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(
                f'<figure><img src="{uri}" alt="{e(Path(name).stem)}"><figcaption>{e(name)}</figcaption></figure>'
            )
    if s.settings:
        rows = "".join(f"<tr><th>{e(str(k))}</th><td>{_setting_html(v)}</td></tr>" for k, v in s.settings.items())
        parts += ["<h3>Settings</h3>", f'<div class="wrap"><table class="settings"><tbody>{rows}</tbody></table></div>']
    if s.command:
        parts += ["<h3>Reproduce</h3>", f"<pre><code>{e(s.command)}</code></pre>"]
    parts.append("</section>")
    return parts


def _verdict_cell(verdict: str) -> str:
    """A verdict in the summary table: whole where it is short; else its start, which opens to the whole on a
    click (``<details>``, no script) and shows it on hover (``title``)."""
    e = html.escape
    short = _clip(verdict)
    if short == _one_line(verdict):
        return e(short)
    return f'<details title="{e(_one_line(verdict))}"><summary>{e(short)}</summary>{e(_one_line(verdict))}</details>'


def _badge(s: Study) -> str:
    return f'<span class="badge {s.status.replace(" ", "-")}">{html.escape(s.status)}</span>'


def _setting_html(value: Any) -> str:
    if isinstance(value, str):
        return html.escape(value)
    return f"<code>{html.escape(json.dumps(value, ensure_ascii=False))}</code>"


def _png(directory: Path, name: str) -> bytes | None:
    """The bytes of figure ``name`` in ``directory`` if it is a PNG there; a name cannot leave the directory."""
    path = directory / Path(name).name
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) else None


# --- Markdown tables -> HTML ------------------------------------------------------------------------------------

TABLE_TAGS = {"table", "thead", "tbody", "tr", "th", "td"}
TEXT_TAGS = {"p", "em", "strong", "code", "pre", "br", "hr", "ul", "ol", "li", "blockquote", "h1", "h2", "h3", "h4"}
ALLOWED_TAGS = frozenset(TABLE_TAGS | TEXT_TAGS | {"h5", "h6"})
ALIGN_STYLE = re.compile(r"text-align: (left|right|center);")


def table_html(text: str) -> str:
    """The study's Markdown (tables and short notes) as HTML, with no way for raw HTML, links or images through.

    Raw HTML in the text is escaped by Markdown itself once its HTML processors are removed; the result is
    then checked against an allowlist, and anything unexpected falls back to the escaped text in ``<pre>``.
    """
    converter = markdown.Markdown(extensions=["tables"], output_format="html")
    converter.preprocessors.deregister("html_block")
    converter.parser.blockprocessors.deregister("reference")
    for pattern in ("reference", "link", "image_link", "image_reference", "short_reference", "short_image_ref"):
        converter.inlinePatterns.deregister(pattern)
    for pattern in ("autolink", "automail", "html"):
        converter.inlinePatterns.deregister(pattern)
    converted = converter.convert(_blank_line_before_tables(text))
    checker = _AllowlistChecker()
    checker.feed(converted)
    checker.close()
    if checker.bad:
        return f"<pre>{html.escape(text)}</pre>"
    return f'<div class="wrap">{converted}</div>'


class _AllowlistChecker(HTMLParser):
    """Flags any tag outside :data:`ALLOWED_TAGS` and any attribute but a cell's text alignment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bad = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.bad = True
        for key, value in attrs:
            if not (tag in ("th", "td") and key == "style" and ALIGN_STYLE.fullmatch(value or "")):
                self.bad = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        self.bad = True

    def handle_decl(self, decl: str) -> None:
        self.bad = True

    def handle_pi(self, data: str) -> None:
        self.bad = True


def _blank_line_before_tables(text: str) -> str:
    """Markdown needs a blank line between a sentence and the table under it; instruments do not always leave one."""
    lines, out = text.strip().splitlines(), []
    for i, line in enumerate(lines):
        if i and line.lstrip().startswith("|") and lines[i - 1].strip() and not lines[i - 1].lstrip().startswith("|"):
            out.append("")
        out.append(line)
    return "\n".join(out)


# --- Markdown twin ----------------------------------------------------------------------------------------------


def render_markdown(
    studies: Sequence[Study],
    directory: str | Path,
    out_dir: str | Path,
    *,
    made: str = "",
    absent: Sequence[str] = (),
    skipped: Sequence[str] = (),
) -> str:
    """The same content as Markdown; figures are linked relative to ``out_dir``, where the file is written."""
    lines = ["# Why residual learning works: the measurements", "", made, "", _tally(studies), ""]
    mixed = mixed_precisions(studies)
    if mixed:
        lines += [f"**Mixed precisions.** {_md(mixed)}", ""]
    lines += ["| study | verdict | status | precision | data |", "|---|---|---|---|---|"]
    lines += [
        f"| [{s.name}](#{s.name}) | {_cell(s.verdict, s.name)} | {s.status} | {_md(s.precision_label)} | "
        f"{_md(s.data).replace('|', '')} |"
        for s in studies
    ]
    lines.append("")
    if absent:
        lines += [f"Not in this directory: {', '.join(absent)}.", ""]
    lines += [f"Skipped: {_md(line)}  " for line in skipped] + ([""] if skipped else [])
    for s in studies:
        lines += [
            f"## {s.name}",
            "",
            f"**Claim.** {_md(s.claim)}",
            "",
            f"**Verdict ({s.status}).** {_md(s.verdict)}",
            "",
            f"Measured in {_md(s.precision_label)} on {_md(s.data or 'data not recorded')}.",
            "",
        ]
        if s.table.strip():
            table = _defuse(_blank_line_before_tables(s.table))
            lines += ["### Key numbers", "", table, ""]
        if s.figures:
            lines += ["### Figures", ""]
            for name in s.figures:
                path = Path(directory) / Path(name).name
                link = os.path.relpath(path, out_dir).replace(os.sep, "/").replace(" ", "%20")
                missing = "" if path.is_file() else " (missing)"
                lines += [f"![{_md(Path(name).stem)}]({link}){missing}", ""]
        if s.settings:
            lines += ["### Settings", ""]
            lines += [
                f"- **{_md(k)}**: {_md(v if isinstance(v, str) else json.dumps(v))}" for k, v in s.settings.items()
            ]
            lines.append("")
        if s.command:
            fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", s.command)), default=0))
            lines += ["### Reproduce", "", fence + "bash", s.command, fence, ""]
    return "\n".join(lines)


def _cell(text: str, name: str) -> str:
    """A verdict for one cell of the Markdown summary table (a ``|`` would end the cell); a long one clipped,
    with a link to its section, where it stands in full."""
    short = _clip(text)
    link = f" [(full verdict)](#{name})" if short != _one_line(text) else ""
    return _md(short).replace("|", "\\|") + link


def _md(value: Any) -> str:
    """JSON text on one Markdown line, defused."""
    return _defuse(_one_line(value))


def _defuse(text: str) -> str:
    """Markdown from JSON that no viewer turns into raw HTML, a link or a remote image: ``<``, ``>`` become
    entities and ``[`` is escaped (links, images and references all start with it)."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("[", "\\[")


# --- shared -----------------------------------------------------------------------------------------------------


def mixed_precisions(studies: Sequence[Study]) -> str:
    """A warning where the studies were measured in more than one precision ("" where they agree): their
    numbers then depend on which CPU ran which study."""
    groups: dict[str, list[str]] = {}
    for s in studies:
        groups.setdefault(s.precision_label, []).append(s.name)
    if len(groups) < 2:
        return ""
    listed = "; ".join(f"{label}: {', '.join(names)}" for label, names in groups.items())
    return (
        f"these studies were measured in {len(groups)} precisions ({listed}), so their numbers are not all "
        "comparable; run them again with one --precision"
    )


def _tally(studies: Sequence[Study]) -> str:
    counts = {status: sum(s.status == status for s in studies) for status in STATUS.values()}
    return (
        f"{len(studies)} {'study' if len(studies) == 1 else 'studies'}: "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
        + "."
    )


def _clip(text: str, limit: int = SUMMARY_VERDICT_CHARS) -> str:
    """A verdict short enough for one summary row, cut at a word."""
    text = _one_line(text)
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())
