"""``resnets report DIR``: every study, figure and table reaches the page; nothing from JSON can run there."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from resnets.cli import main
from resnets.studies import STUDIES
from resnets.studies.report import find_studies, table_html, write_report

TABLE = "| net | error (%) |\n|---|---|\n| resnet20 | {value} |"


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (6, 4), colour).save(path, format="PNG")
    return path


def _study(out: Path, name: str, supported: bool | None, figures: int = 1, **fields: str) -> dict:
    """Write NAME.json/NAME.md with ``figures`` distinct PNGs, in the layout of a study without re-judging (one
    of an older version, or of an instrument this version does not know): the report shows it as written."""
    paths = [_png(out / f"{name}-fig{i}.png", (len(name) * 9 % 256, 40 * i, 7)) for i in range(figures)]
    result = {
        "name": name,
        "claim": fields.get("claim", f"the claim of {name} (Someone et al. 2016)"),
        "verdict": fields.get("verdict", f"the verdict of {name}"),
        "supported": supported,
        "settings": {"seeds": 3, "models": ["resnet20", "plain20"], "bn": "train-mode"},
        "numbers": {"error": 8.75},
        "table": fields.get("table", TABLE.format(value=f"{len(name)}.25")),
        "figures": [p.name for p in paths],
        "command": f"resnets study {name} --out {out}",
    }
    (out / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")
    (out / f"{name}.md").write_text(f"# {name}\n\n{result['verdict']}\n", encoding="utf-8")
    return result


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would see them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    out = tmp_path / "studies"
    out.mkdir()
    _study(out, "signal", True, figures=3)
    _study(out, "gradients", False, figures=2)
    _study(out, "zeta_custom", None, figures=0)
    _study(out, "alpha_custom", True, verdict="long " * 80 + "end of a long verdict")
    (out / "lesion.json").write_text('{"name": "lesion", "claim": ', encoding="utf-8")  # cut off mid-write
    (out / "runs").mkdir()
    (out / "runs" / "record.json").write_text("{}", encoding="utf-8")  # training runs are not studies
    return out


def test_every_figure_is_embedded_and_nothing_is_loaded_from_outside(studies: Path) -> None:
    report = write_report(studies)
    page = report.html.read_text(encoding="utf-8")
    tags = _Tags(page).tags
    figures = [
        name
        for path in sorted(studies.glob("*.json"))
        if path.stem != "lesion"
        for name in json.loads(path.read_text())["figures"]
    ]
    assert len(figures) == 6
    for name in figures:
        assert base64.b64encode((studies / name).read_bytes()).decode("ascii") in page, name
    sources = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(sources) == 6 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert not [tag for tag, _ in tags if tag in ("script", "link", "iframe", "object")]
    hrefs = [attrs["href"] for tag, attrs in tags if tag == "a"]
    assert hrefs and all(href.startswith("#study-") for href in hrefs)  # only links within the page


def test_every_study_appears_in_order_absent_are_listed_corrupt_is_skipped(
    studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(studies)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "lesion.json" in err and "not readable JSON" in err
    assert f"wrote {studies / 'report.html'}, {studies / 'report.md'}" in out
    page = (studies / "report.html").read_text(encoding="utf-8")
    order = ["gradients", "signal", "alpha_custom", "zeta_custom"]  # registry order, then unknown names sorted
    positions = [page.index(f'<section id="study-{name}">') for name in order]
    assert positions == sorted(positions)
    for name in order:
        data = json.loads((studies / f"{name}.json").read_text())
        assert data["claim"] in page and data["verdict"] in page
    assert "4 studies: 2 supported, 1 not supported, 1 undecided." in page
    absent = [name for name in STUDIES if name not in ("gradients", "signal", "lesion")]
    assert f"Not in this directory: {', '.join(absent)}." in page
    assert "Skipped: " in page and "lesion.json" in page
    summary = page[: positions[0]]
    # a long verdict is clipped in its summary row, and the whole of it is one click (or a hover) away
    (row,) = [line for line in summary.splitlines() if "#study-alpha_custom" in line]
    assert "<details title=" in row and "<summary>long long" in row and "end of a long verdict</details>" in row
    assert "<details" not in summary.split("#study-gradients")[1].split("</tr>")[0]  # a short one stays whole
    assert "<td>9.25</td>" in page  # gradients' table, converted to HTML


def test_markdown_twin_links_every_figure_and_has_every_table(studies: Path, tmp_path: Path) -> None:
    report = write_report(studies, tmp_path / "elsewhere" / "all.html")
    assert report.markdown == tmp_path / "elsewhere" / "all.md"
    text = report.markdown.read_text(encoding="utf-8")
    for name in ("signal", "gradients", "zeta_custom", "alpha_custom"):
        data = json.loads((studies / f"{name}.json").read_text())
        assert data["table"] in text
        assert f"## {name}\n" in text
        for figure in data["figures"]:
            link = f"../studies/{figure}"
            assert f"![{Path(figure).stem}]({link})" in text
            assert (report.markdown.parent / link).is_file()
    assert text.count("![") == 6
    assert "```bash\nresnets study signal --out" in text


def test_text_from_json_cannot_run_script(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    table = (
        f"A note right above the table {evil}\n| net <img src=x onerror=alert(1)> | [go](javascript:alert(2)) |\n"
        f"|---|---|\n| {evil} | ![p](http://example.com/p.png) |"
    )
    _study(tmp_path, "paths", None, claim=f"claim {evil}", verdict=f"verdict {evil}", table=table)
    data = json.loads((tmp_path / "paths.json").read_text())
    data["settings"]["<b>key</b>"] = evil
    data["command"] = "resnets study paths </code></pre>" + evil
    (tmp_path / "paths.json").write_text(json.dumps(data))
    report = write_report(tmp_path)
    page = report.html.read_text(encoding="utf-8")
    tags = _Tags(page).tags
    assert "<script" not in page.lower()
    assert not [value for _, attrs in tags for value in attrs.values() if "javascript:" in (value or "")]
    assert not [tag for tag, _ in tags if tag in ("script", "b")]
    assert not [attrs for _, attrs in tags if any(key.startswith("on") for key in attrs)]
    assert [attrs["src"][:5] for tag, attrs in tags if tag == "img"] == ["data:"]  # its own figure only
    assert "claim &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<th>net &lt;img src=x onerror=alert(1)&gt;</th>" in page  # the table is still a table
    assert "<td>&lt;script&gt;alert('x')&lt;/script&gt;</td>" in page
    assert "<td>![p](http://example.com/p.png)</td>" in page  # an image in the table stays text
    twin = report.markdown.read_text(encoding="utf-8").split("```bash")[0]  # the command is literal in its fence
    assert "<script" not in twin and "<img" not in twin
    assert re.findall(r"(?<!\\)\[[^\]]*\]\(", twin) == ["[paths](", "[paths-fig0]("]  # only our own links
    assert "| &lt;script&gt;alert('x')&lt;/script&gt; | !\\[p](http://example.com/p.png) |" in twin


def test_table_html_keeps_alignment_and_emphasis_and_finds_tables_under_a_sentence() -> None:
    converted = table_html("Errors:\n| a | b |\n|:--|--:|\n| *x* | 1 ± 2 |")
    assert "<p>Errors:</p>" in converted
    assert '<td style="text-align: left;"><em>x</em></td>' in converted
    assert '<td style="text-align: right;">1 ± 2</td>' in converted


def test_find_studies_skips_a_json_that_is_not_a_study(tmp_path: Path) -> None:
    _study(tmp_path, "hessian", False)
    (tmp_path / "notes.json").write_text('{"anything": 1}')
    (tmp_path / "scaling.json").write_text('{"claim": "c", "verdict": "v", "supported": "yes"}')
    studies, skipped = find_studies(tmp_path)
    assert [s.name for s in studies] == ["hessian"] and studies[0].status == "not supported"
    assert len(skipped) == 2 and "notes.json" in skipped[1] and "'supported' must be" in skipped[0]


@pytest.mark.parametrize("case", ["empty", "missing", "only-corrupt", "not-html", "overwrites-a-study"])
def test_cli_exits_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "out"
    argv = ["report", str(directory)]
    if case != "missing":
        directory.mkdir()
    if case == "only-corrupt":
        (directory / "signal.json").write_text("not json")
    if case == "not-html":
        _study(directory, "signal", True)
        argv += ["--out", str(tmp_path / "report.pdf")]
    if case == "overwrites-a-study":
        _study(directory, "signal", True)
        argv += ["--out", str(directory / "signal.html")]
    md_before = (directory / "signal.md").read_text() if case == "overwrites-a-study" else None
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("resnets report: error: ")
    expected = {"not-html": "report.pdf", "overwrites-a-study": "signal.md"}.get(case, f"{directory} ")
    assert expected in err
    assert not directory.exists() or not list(directory.glob("*.html"))  # nothing written
    if md_before is not None:
        assert (directory / "signal.md").read_text() == md_before
