"""Text from the target in every output (issue 31, row U1): each medium gets it escaped by its own helper.

Product names (and anything else a target sends) reach the oracle's evidence, and from there the terminal,
summary.md, junit.xml, summary.json, custom_report.csv, report.html and the web tab. These are properties over
arbitrary text (hypothesis, with the characters that did harm drawn often: ESC sequences, C1 controls, bidi
overrides, lone surrogates, markup), each checked with what reads that medium: a CommonMark renderer for
Markdown, the XML parser for junit.xml, a strict JSON parser, the csv module, an HTML parser for report.html.
"""
from __future__ import annotations

import csv
import html.parser
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from loadsuite.reporting import junit, verdict
from loadsuite.reporting.console import consistency_counts, terminal_safe, verdict_block
from loadsuite.reporting.tables import md_escape, md_table
from loadsuite.runtime import end_of_run
from loadsuite.runtime.custom_stats import STATS

HARMFUL = ["\x1b[2J", "\x1b[31m", "\x1b]0;title\x07", "\x9b2J", "\x01", "\x08", "\x00", "\r", "\n", "\t", "\x7f",
           "\u202e", "\u2066", "\u2028", "\ud800", "\udfff", "</script>", "<svg onload=alert(1)>", "&amp;", "|",
           "`", "*", "_", "[x](javascript:alert(1))", "![i](http://x/i.png)", "$x$", "~~", "#", "\\", "=cmd|' /C calc'!A0",
           "+1", "-1", "@SUM(1)", "'", '"', "\ufffe", "\uffff"]
CHARS = st.one_of(st.sampled_from(HARMFUL), st.characters(exclude_categories=()))  # surrogates included
TEXT = st.lists(CHARS, max_size=12).map("".join)
# A terminal acts on these instead of showing them (console.py's list); none may come from data.
ACTED_ON = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
OUR_COLOURS = re.compile(r"\x1b\[(?:0|1|31|32|33|1\x1b\[3[123])m")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def summary_with(text: str) -> dict:
    """A failed run whose every data field carries `text` (as a lying target's product names would)."""
    violation = {"kind": "lost_update", "product": text, "message": f"two buys of {text} saw 7", "evidence": [
        {"request": "buy", "product": text}]}
    return {
        "run_id": "r1", "duration_s": 1.0, "host": "http://127.0.0.1:1",
        "thresholds": [{"metric": "p95_ms", "scope": text, "limit": 1.0, "observed": 2.0, "passed": False}],
        "consistency": {"enabled": True, "passed": False, "products_checked": 1, "inconclusive": 1,
                        "inconclusive_products": [{"product": text, "reason": f"{text} lies within 1..2"}],
                        "violations": [violation], "violations_total": 1, "violation_counts": {"lost_update": 1},
                        "dropped_records": 0, "notes": [f"start snapshot failed: {text}"], "reason": text},
        "custom_stats": {"validation_failures": {text: 1}},
        "verdict": {"passed": False, "exit_code": 1, "reasons": [f"FAIL: p95_ms {text}"]},
    }


# The terminal -------------------------------------------------------------------------------------------

@FAST
@given(text=TEXT)
def test_no_control_character_from_data_reaches_the_terminal_whatever_the_colour(text):
    for colour in (False, True):
        block = verdict_block(summary_with(text), "results/r1", colour=colour)
        assert not ACTED_ON.search(OUR_COLOURS.sub("", block)), repr(block)


@FAST
@given(text=TEXT)
def test_the_terminal_shows_what_was_there_written_out_never_dropped(text):
    shown = terminal_safe(text)
    assert not ACTED_ON.search(shown)
    # Every harmful character is written out as its code, so a reader sees what the target sent.
    decoded = re.sub(r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})", lambda m: chr(int(m[1] or m[2], 16)), shown)
    if "\\x" not in text and "\\u" not in text:
        assert decoded == text


def test_the_custom_statistics_table_on_the_console_writes_keys_out():
    STATS.reset()
    try:
        STATS.validation_failure("\x1b[2Jevil\x9b")
        table = end_of_run.custom_table()
    finally:
        STATS.reset()
    assert "\x1b" not in table and "\x9b" not in table and "\\x1b[2Jevil\\x9b" in table


def test_the_oracle_log_line_names_a_product_in_repr():
    from loadsuite.oracle.records import OracleResult, Violation
    line = OracleResult(False, 1, [], [Violation("\x1b[2Jx", "lost_update", "m")]).summary_line()
    assert "\x1b" not in line and "'\\x1b[2Jx'" in line


# Markdown (summary.md, compare.md, the CI job summary) ---------------------------------------------------

class _Cells(html.parser.HTMLParser):
    """The tags of rendered HTML and the text of every table cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._in_cell, self.cells = True, [*self.cells, ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _rendered(markdown: str) -> _Cells:
    parser = _Cells()
    parser.feed(MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown))
    return parser


def _written_out(text: str) -> str:
    """What md_escape promises a reader sees: the text on one line, hidden characters written out."""
    text = text.replace("\r\n", " ").replace("\n", " ")
    return re.sub("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]",
                  lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


@FAST
@given(text=TEXT)
def test_a_markdown_cell_renders_as_exactly_the_text_and_never_as_markup(text):
    rendered = _rendered(md_table(("Product", "Count"), [[text, "1"]]))
    assert set(rendered.tags) <= {"table", "thead", "tbody", "tr", "th", "td"}, rendered.tags
    assert rendered.cells[2:] == [_written_out(text).strip(" "), "1"] or \
        rendered.cells[2:] == [_written_out(text).strip(), "1"], (text, rendered.cells)


@FAST
@given(text=TEXT)
def test_a_markdown_fact_line_renders_as_the_text(text):
    rendered = MarkdownIt("commonmark").enable("strikethrough").render(f"- **Host:** {md_escape(text)}")
    parser = _Cells()
    parser.feed(rendered)
    assert set(parser.tags) <= {"ul", "li", "strong"}, (text, rendered)


def test_summary_md_of_a_hostile_run_carries_no_tag_and_shows_the_names(tmp_path):
    from loadsuite.reporting import markdown
    from tests.test_analyze_results import basic_run

    name = "\x1b[2J\x1b[31mEvil</script><svg onload=alert(1)>\x01\x08|[x](javascript:alert(1))"
    folder = basic_run(tmp_path / "run", summary=summary_with(name))
    md = markdown.summary_markdown(markdown.load_run(folder), list(markdown.CHARTS))
    assert not re.search(r"(?<!\\)[<>]", md) and "\x1b" not in md and "\x01" not in md  # every < and > escaped
    parser = _Cells()
    parser.feed(MarkdownIt("commonmark").enable("table").render(md))
    assert "svg" not in parser.tags and "script" not in parser.tags and "a" not in parser.tags
    assert parser.tags.count("img") == len(markdown.CHARTS)  # only our own charts
    assert any(_written_out(name) in cell for cell in parser.cells)


# junit.xml -------------------------------------------------------------------------------------------------

@FAST
@given(text=TEXT)
def test_junit_xml_always_parses_and_carries_the_text_xml_can_carry(text, tmp_path_factory):
    folder = tmp_path_factory.mktemp("junit")
    root = ET.parse(verdict.write_junit(folder, summary_with(text))).getroot()
    failure = root.find("testcase[@classname='consistency']/failure")
    threshold = root.find("testcase[@classname='thresholds']")
    assert failure is not None and threshold is not None
    expected = junit.xml_safe(text).replace("\r\n", "\n").replace("\r", "\n")  # XML's own line-end rule
    assert expected in failure.text
    assert threshold.get("name") == junit.xml_safe(f"p95_ms {text}")  # attributes: ElementTree writes &#10; etc.


# summary.json ------------------------------------------------------------------------------------------------

def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@FAST
@given(text=TEXT, number=st.floats(allow_nan=True, allow_infinity=True))
def test_summary_json_is_strict_utf8_json_whatever_the_text_and_numbers(text, number, tmp_path_factory):
    folder = tmp_path_factory.mktemp("json")
    summary = {**summary_with(text), "duration_s": number}
    raw = verdict.write_summary(folder, summary).read_bytes()
    data = _strict(raw.decode("utf-8", errors="strict"))
    product = data["consistency"]["violations"][0]["product"]
    # A surrogate pair is one character again once JSON-decoded (as the target's own JSON would have it); a lone one
    # is replaced.
    assert product == re.sub("[\ud800-\udfff]", "\ufffd", json.loads(json.dumps(text)))
    assert not re.search("[\ud800-\udfff]", json.dumps(data, ensure_ascii=False))
    assert data["duration_s"] is None or isinstance(data["duration_s"], float)


# custom_report.csv ---------------------------------------------------------------------------------------------

@FAST
@given(text=TEXT)
def test_no_custom_report_cell_starts_a_formula(text, tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    STATS.reset()
    try:
        STATS.validation_failure(text)
        STATS.unexpected_status(text, 500)
        path = end_of_run.write_custom_report(folder)
    finally:
        STATS.reset()
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["metric", "key", "value"]
    for row in rows[1:]:
        assert len(row) == 3 and row[2].isdigit()
        assert not row[1].startswith(("=", "+", "-", "@", "\t", "\r", "\n")), row


# report.html (Locust's page, rewritten by end_of_run) -------------------------------------------------------

def test_report_html_carries_hostile_request_text_as_data_never_as_markup(tmp_path):
    from locust import HttpUser, task
    from locust.env import Environment

    from loadsuite.runtime.run import SuiteRun
    from loadsuite.config import parse_config

    class Shopper(HttpUser):
        host = "http://127.0.0.1:1"

        @task
        def nothing(self):
            pass

    hostile = "</script><svg onload=alert(1)><!--\u2028\x1b[2J"
    environment = Environment(user_classes=[Shopper])
    environment.create_local_runner()
    try:
        environment.stats.log_request("GET", hostile, 12, 100)
        environment.stats.log_error("GET", hostile, f"status: {hostile}")
        run = SuiteRun(parse_config({}))
        run.html_file = str(tmp_path / "report.html")
        run.test = type("T", (), {"write_errors": []})()
        end_of_run._write_html_report(run, environment)
    finally:
        environment.runner.quit()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<svg onload" not in page and "\x1b" not in page  # (Locust's bundle has "<svg" of its own)
    args = re.search(r"window\.templateArgs = (\{.*?\})\s*window\.theme", page, re.S)
    assert args is not None and "<" not in args.group(1) and ">" not in args.group(1)  # Jinja's tojson: \u003c
    data = json.loads(args.group(1))
    assert any(row.get("name") == hostile for row in data["requests_statistics"])
    assert any(hostile in row.get("error", "") for row in data["failures_statistics"])


@pytest.mark.parametrize("text", ["\x1b[2Jname", "</script><svg onload=alert(1)>"])
def test_the_web_tab_hands_text_to_the_ui_as_json_strings(text):
    from loadsuite.webui import tab

    rows = tab.tab_rows(summary_with(text), {}, "stopped")
    violation = next(row for row in rows if row["section"] == "violation")
    assert violation["scope"] == text  # React renders a string child as text (its own escaping)
    assert json.loads(json.dumps(rows)) == rows


def test_consistency_counts_are_ours_not_data():
    assert consistency_counts({"violation_counts": {"lost_update": 2}}) == "lost_update x2"


# The whole suite against a target whose product names are hostile ------------------------------------------

@pytest.mark.e2e
def test_a_run_against_hostile_product_names_writes_every_output_escaped(tmp_path):
    """tests/lying_shop.py serves names with ESC sequences, C0/C1 controls, bidi overrides, HTML and a spreadsheet
    formula, and loses every buy (so the names reach the oracle's evidence); NO_COLOR=1, no terminal."""
    from lying_shop import HOSTILE, running
    from suite_runs import run_suite, write_config

    config = write_config(tmp_path, {"wait_time": {"min_seconds": 0.05, "max_seconds": 0.2},
                                     "flash_sale": {"start_seconds": 1, "duration_seconds": 2}})
    with running("--hostile-names", "--lose-every-buy") as shop:
        run = run_suite("headless", "4", "4", shop, "--config", str(config), results_root=tmp_path / "results",
                        timeout=120, env={"NO_COLOR": "1"})
    assert run.returncode == 1, run.explain()
    assert "Traceback" not in run.stdout + run.stderr
    assert not ACTED_ON.search(run.stdout) and not ACTED_ON.search(run.stderr)  # newlines are ours
    assert terminal_safe(HOSTILE[0]) in run.stdout  # the best-seller's name, written out, in the evidence
    folder = run.folder
    summary = _strict((folder / "summary.json").read_bytes().decode("utf-8"))
    named = {v["product"] for v in summary["consistency"]["violations"]}
    assert named & set(HOSTILE), named  # the hostile names did reach the outputs
    junit_root = ET.parse(folder / "junit.xml").getroot()  # well-formed
    assert junit_root.find("testcase[@classname='consistency']/failure") is not None
    md = (folder / "summary.md").read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed(MarkdownIt("commonmark").enable("table").render(md))
    assert not {"svg", "script", "b", "a"} & set(parser.tags), parser.tags
    assert any(_written_out(HOSTILE[0]) in cell for cell in parser.cells)
    with open(folder / "custom_report.csv", newline="", encoding="utf-8") as handle:
        assert not [row for row in csv.reader(handle) if any(cell.startswith(("=", "+", "@")) for cell in row)]
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<svg onload" not in page and "\x1b" not in page
