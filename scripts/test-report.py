"""The end of scripts/test.sh: each pass's wall time and outcome, and the slowest tests.

    python scripts/test-report.py PASSES.tsv [SLOWEST]

PASSES.tsv has one line per pass: name, seconds, exit status, and the pass's JUnit XML
(pytest --junitxml), tab-separated. Prints the pass table, then the SLOWEST (default 15)
tests of all passes, so that growth is seen before CI's time limit is.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Pass:
    name: str
    seconds: float
    status: int
    counts: dict[str, int] = field(default_factory=dict)
    tests: list[tuple[float, str]] = field(default_factory=list)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def read_pass(line: str) -> Pass:
    name, seconds, status, junit = line.rstrip("\n").split("\t")
    found = Pass(name, float(seconds), int(status))
    path = Path(junit)
    if not junit or not path.is_file():
        return found
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return found
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        counts[outcome] += 1
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        found.tests.append((float(case.get("time") or 0), test_id))
    found.counts = counts
    return found


def main() -> None:
    passes = [read_pass(line) for line in Path(sys.argv[1]).read_text().splitlines() if line]
    slowest = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    total = sum(p.seconds for p in passes)
    width = max([len(p.name) for p in passes] + [4])
    print(f"\n=== CI passes: {_minutes(total)} in all ===")
    print(f"{'pass':<{width}}  {'wall time':>13}  {'result':<6}  tests")
    for each in passes:
        result = "ok" if each.status == 0 else f"rc {each.status}"
        tests = ", ".join(f"{n} {k}" for k, n in each.counts.items() if n) or "-"
        print(f"{each.name:<{width}}  {_minutes(each.seconds):>13}  {result:<6}  {tests}")
    ranked = sorted(
        ((seconds, test_id, each.name) for each in passes for seconds, test_id in each.tests),
        reverse=True,
    )[:slowest]
    if ranked:
        print(f"\n=== the {len(ranked)} slowest tests ===")
        for seconds, test_id, name in ranked:
            print(f"{seconds:8.1f} s  {test_id}  ({name})")


if __name__ == "__main__":
    main()
