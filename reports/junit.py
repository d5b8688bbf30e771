"""JUnit XML for CI systems: one testcase per check, a failure where a check fails, a skip where it cannot judge.

`write_junit(path, cases)` takes any list of `Case`; `verdict_cases` makes them from a sweep's verdict entries:

    agree                        pass
    disagree                     <failure>  "expected transfers, observed shifts: <the analysis' reason>"
    inconclusive                 <skipped>  the reason (grid edge, divergence, missing runs): nothing to judge yet
    no expectation               <skipped>  "no registered expectation; observed shifts: …"
    runs still pending           <skipped>  "sweep incomplete: 12/24 runs finished; …" (a partial verdict is not final)
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from mupbench.store import atomic_write


@dataclass
class Case:
    name: str
    classname: str
    failure: str | None = None  # a message makes the case fail
    skipped: str | None = None  # a message makes it skipped (ignored when it fails)
    time: float = 0.0  # seconds


def verdict_cases(entries: list[dict], classname_prefix: str = "mupbench") -> list[Case]:
    """One Case per results.json verdict entry, named "<ablation>[<parameterization>]"."""
    cases = []
    for e in entries:
        case = Case(name=f"{e['ablation']}[{e['parameterization']}]", classname=f"{classname_prefix}.{e['ablation']}")
        runs = e.get("runs")
        if runs and not e.get("complete", True):
            failed = f" ({runs['failed']} failed)" if runs["failed"] else ""
            case.skipped = (f"sweep incomplete: {runs['finished']}/{runs['planned']} runs finished{failed}; "
                            f"so far {e['verdict']}: {e['reason']}")
        elif e["agreement"] == "disagree":
            case.failure = f"expected {e['expected']}, observed {e['verdict']}: {e['reason']}"
        elif e["agreement"] == "inconclusive":
            case.skipped = f"inconclusive: {e['reason']}"
        elif e["agreement"] == "no expectation":
            case.skipped = f"no registered expectation; observed {e['verdict']}: {e['reason']}"
        cases.append(case)
    return cases


# Characters XML 1.0 cannot carry at all, escaped or not: C0 controls but tab, newline and CR; surrogates; U+FFFE/F.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text) -> str:
    """`text` with every character XML cannot hold written as \\xNN (ElementTree escapes <, > and & itself)."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def junit_xml(cases: list[Case], suite_name: str = "mupbench") -> str:
    failures = sum(c.failure is not None for c in cases)
    skipped = sum(c.failure is None and c.skipped is not None for c in cases)
    total_time = sum(c.time for c in cases)
    attrs = {"name": xml_text(suite_name), "tests": str(len(cases)), "failures": str(failures), "errors": "0",
             "skipped": str(skipped), "time": f"{total_time:.3f}"}
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", attrs)
    for c in cases:
        el = ET.SubElement(suite, "testcase", {"name": xml_text(c.name), "classname": xml_text(c.classname),
                                               "time": f"{c.time:.3f}"})
        if c.failure is not None:
            failure = xml_text(c.failure)
            ET.SubElement(el, "failure", {"message": _first_line(failure), "type": "AssertionError"}).text = failure
        elif c.skipped is not None:
            ET.SubElement(el, "skipped", {"message": _first_line(xml_text(c.skipped))})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, cases: list[Case], suite_name: str = "mupbench") -> Path:
    return atomic_write(path, junit_xml(cases, suite_name))


def _first_line(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "…"
