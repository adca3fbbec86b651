"""junit.xml, written in one place with the standard library's ElementTree, for CI systems to show natively.

ElementTree escapes markup but writes any character it is given, and XML 1.0 cannot carry most control
characters: text from the target (product names in the oracle's evidence) is made XML-safe first.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# Characters XML 1.0 does not allow (C0 controls but tab, newline and carriage return; surrogates; U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: object) -> str:
    """The text with every character XML cannot carry replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(text))


@dataclass(frozen=True)
class Case:
    """One <testcase>: passed, failed (failure: its message; details: the element's text) or skipped."""

    classname: str
    name: str
    failure: str | None = None
    details: str = ""
    skipped: str | None = None


def write(folder: Path, suite: str, cases: list[Case], seconds: float = 0.0) -> Path:
    """folder/junit.xml with one <testsuite> of these cases (replaced atomically)."""
    root = ET.Element("testsuite", name=xml_safe(suite), tests=str(len(cases)),
                      failures=str(sum(case.failure is not None for case in cases)),
                      skipped=str(sum(case.skipped is not None and case.failure is None for case in cases)),
                      errors="0", time=f"{seconds or 0:g}")
    for case in cases:
        element = ET.SubElement(root, "testcase", classname=xml_safe(case.classname), name=xml_safe(case.name))
        if case.failure is not None:
            failure = ET.SubElement(element, "failure", message=xml_safe(case.failure))
            failure.text = xml_safe(case.details) if case.details else None
        elif case.skipped is not None:
            ET.SubElement(element, "skipped", message=xml_safe(case.skipped))
    ET.indent(root)
    path = Path(folder) / "junit.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".xml.tmp")
    ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)
    os.replace(tmp, path)
    return path
