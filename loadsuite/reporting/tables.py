"""Tables for every output: the per-request rows, a terminal table and a GitHub Markdown table."""
from __future__ import annotations

import re

import pandas as pd

from .format import fmt_count, fmt_ms, fmt_points, fmt_sample, fmt_num

TABLE_HEADERS = ("Request", "Requests", "Failures", "Failure %", "p50 ms", "p95 ms", "p99 ms",
                 "Average ms", "Max ms", "Req/s")



def _label(method: str, name: str, duplicated: set[str]) -> str:
    return f"{method} {name}" if name in duplicated and method else name


def duplicated_names(frame: pd.DataFrame) -> set[str]:
    """Names used with more than one method: those rows are labelled "METHOD name"."""
    counts = frame["name"].value_counts()
    return set(counts[counts > 1].index)


def table_rows(endpoints: pd.DataFrame, total: pd.Series) -> list[list[str]]:
    """Rows of the per-request table (strings), the Aggregated total last."""
    dup = duplicated_names(endpoints)
    rows = []
    for row in [*endpoints.itertuples(index=False), None]:
        r = total if row is None else row._asdict()
        label = "Total" if row is None else _label(r["method"], r["name"], dup)
        if r["requests"] == 0:
            rows.append([label, "0", "0", "-", *(["not called"] + ["-"] * 4), "-"])
            continue
        count = r["requests"]
        rows.append([label, fmt_count(count), fmt_count(r["failures"]), fmt_points(r["failure_pct"]),
                     *(fmt_sample(count, fmt_ms(r[c])) for c in ("p50_ms", "p95_ms", "p99_ms")),
                     fmt_ms(r["avg_ms"]), fmt_ms(r["max_ms"]), fmt_num(r["rps"])])
    return rows


def has_small_samples(endpoints: pd.DataFrame) -> bool:
    from .format import SMALL_SAMPLE
    counts = endpoints["requests"]
    return bool(((counts > 0) & (counts < SMALL_SAMPLE)).any())


def text_table(headers, rows, text_columns: tuple[int, ...] = (0,)) -> str:
    """A plain aligned table for the terminal: text columns left, numbers right."""
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    text = {i % len(headers) for i in text_columns}

    def line(cells):
        return "  ".join(c.ljust(w) if i in text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


# Markdown (summary.md, compare.md, the CI job summary): what could start markup is backslash-escaped (CommonMark
# lets any ASCII punctuation be), so text from the target shows as the text it is: no HTML tag (<svg onload=...>,
# </script>), entity, link, image, code span, emphasis, strike-through, math ($), heading (#) or table cell break
# (|). An underscore inside a word starts nothing and stays (p95_ms, Get_All_Products). Characters a renderer would
# act on or drop (controls, bidi overrides, lone surrogates) are written out as \\xNN / \\uNNNN; newlines become
# spaces.
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~$#]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_MD_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _written_out(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def md_escape(text) -> str:
    """Text as Markdown shows it literally, on one line (every cell and fact of summary.md goes through here)."""
    text = str(text).replace("\r\n", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(lambda m: "\\" + m[0], _MD_HIDDEN.sub(_written_out, text))


def md_table(headers, rows, left: int = 1, text_columns: tuple[int, ...] = ()) -> str:
    """A GitHub Markdown table: the first `left` columns (and `text_columns`) left-aligned, numbers right-aligned."""
    text = set(range(left)) | {i % len(headers) for i in text_columns}
    out = ["| " + " | ".join(md_escape(h) for h in headers) + " |",
           "|" + "|".join(":---" if i in text else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
