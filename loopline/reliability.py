"""docs/reliability.md's numbers, from what the reliability tests recorded.

The tests record what they tried and how it ended (`tests/conftest.py`, `ReliabilityRecord`),
one JSON file per kind in ``<data>/reports/reliability/`` when run with
``LOOPLINE_RELIABILITY_REPORT=1``:

- ``faults_fast.json``, ``faults_slow_<stage>.json``: fault-injection trials
  (`tests/reliability/`): stage, seed, kill point, whether the kill landed before the stage
  finished, the outcome (the slow suite's in a file per stage, so that one stage's trials
  can be run again alone);
- ``fault_rules.json``: how the trials compare tables (the run-specific columns left out);
- ``api_fuzz.json``: the schemathesis runs against the API (requests, statuses, failures);
- ``bad_input.json``: each bad-input test (`reliability` marker) and its outcome.

`render` replaces the text between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->`` in docs/reliability.md with a block made from those files,
so the prose around them stays as written and the numbers are the last run's. A block whose
file is missing is left as it is. Run ``python -m loopline.reliability`` (``--check``: exit 1
if the document is not up to date).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
STAGES = ("ingest", "build", "train", "score", "stream")
SUITES = {"faults_fast": "`make test`", "faults_slow": "slow suite (`make test-slow`)"}
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) [^>]*-->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """The recorded files in `folder`, by kind (file name without `.json`)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    # a pipe inside a cell (a regular expression, say) would end the cell
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _when(record: dict[str, Any]) -> str:
    return str(record.get("written_at", "?"))[:10]


def _span(values: list[float], fmt: str) -> str:
    """`low to high` (one value when they are equal), `-` for none."""
    if not values:
        return "-"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low} to {high}"


def faults_block(records: dict[str, dict[str, Any]]) -> str | None:
    """Per stage and suite: trials, kills that landed, where they landed, outcomes."""
    suites = {
        suite: [records[kind] for kind in sorted(records) if kind.startswith(suite)]
        for suite in SUITES
    }
    if not any(suites.values()):
        return None
    out = []
    for suite, recorded in suites.items():
        if not recorded:
            continue
        trials = [trial for record in recorded for trial in record["entries"]]
        dates = sorted({_when(record) for record in recorded})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        out.append(f"**{SUITES[suite]}** ({len(trials)} trials, recorded {when}):\n\n")
        rows = []
        for stage in STAGES:
            mine = [t for t in trials if t["stage"] == stage]
            if not mine:
                continue
            killed = [t for t in mine if t["killed"]]
            fractions = [t["fraction"] for t in killed if t.get("fraction")]
            delays = [t["kill_delay_s"] for t in killed]
            reference = max((t.get("reference_seconds") or 0.0) for t in mine)
            rows.append(
                [
                    f"`loopline {stage}`",
                    len(mine),
                    len(killed),
                    _span(delays, "{:.1f}") + (" s" if delays else ""),
                    _span(fractions, "{:.0%}"),
                    f"{reference:.0f} s" if reference else "-",
                    sum(t["ok"] for t in mine),
                    sum(not t["ok"] for t in mine),
                ]
            )
        out.append(
            _table(
                [
                    "stage", "trials", "killed", "kill after", "share of the reference run",
                    "reference run", "same as uninterrupted", "differed",
                ],
                rows,
            )
        )  # fmt: skip
        differed = [t for t in trials if not t["ok"]]
        if differed:
            out.append("\nTrials that differed:\n\n")
            out += [
                f"- {t['stage']}, seed {t['seed']}, {t['kill']}: {t['outcome']}\n" for t in differed
            ]
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def fault_rules_block(records: dict[str, dict[str, Any]]) -> str | None:
    """The columns trials leave out or normalise, per relation (those with the same rule in
    one row), and why."""
    if "fault_rules" not in records:
        return None
    rules: dict[str, Any] = records["fault_rules"]["entries"][0]
    grouped: dict[str, list[str]] = {}
    for relation, rule in rules.items():
        what = [f"`{c}`: {why}" for c, why in rule.get("ignore", {}).items()]
        what += [f"`{c}` compared as `{sql.format(c=c)}`: {why}"
                 for c, (sql, why) in rule.get("normalise", {}).items()]  # fmt: skip
        if rule.get("latest"):
            what.append(f"only the rows of the latest attempt (by `{rule['latest'][1]}`)")
        if rule.get("not_compared"):
            what.append(f"rows not compared with the uninterrupted run's: {rule['not_compared']}")
        name = "every relation" if relation == "*" else f"`{relation}`"
        grouped.setdefault("; ".join(what), []).append(name)
    rows = [[", ".join(names), what] for what, names in grouped.items()]
    return _table(["relation", "left out of the comparison, or compared normalised, and why"], rows)


def fuzz_block(records: dict[str, dict[str, Any]]) -> str | None:
    """Requests schemathesis sent, per run, and what came back."""
    if "api_fuzz" not in records:
        return None
    runs = records["api_fuzz"]["entries"]
    rows = []
    for run in runs:
        statuses = ", ".join(f"{code}: {n:,}" for code, n in sorted(run["statuses"].items()))
        rows.append(
            [
                run["run"],
                f"{run['requests']:,}",
                run["server_errors"],
                run["conformance_failures"],
                statuses,
            ]
        )
    total = sum(run["requests"] for run in runs)
    operations = runs[0].get("operations", []) if runs else []
    return (
        _table(["run", "requests", "5xx", "conformance failures", "statuses"], rows)
        + f"\n{total:,} requests in all (recorded {_when(records['api_fuzz'])}), over "
        + ", ".join(f"`{op}`" for op in operations)
        + ".\n"
    )


def _case(entry: dict[str, Any]) -> str:
    name, _, param = entry["case"].partition("[")
    words = name.removeprefix("test_").replace("_", " ")
    return words + (f" [{param.rstrip(']')}]" if param else "")


def bad_input_block(records: dict[str, dict[str, Any]]) -> str | None:
    """Each bad input tried (a marked test) and how it ended, per test module."""
    if "bad_input" not in records:
        return None
    entries = records["bad_input"]["entries"]
    outcomes = Counter(e["outcome"] for e in entries)
    modules: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        modules.setdefault(entry["module"], []).append(entry)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    out = [f"{len(entries)} cases ({summary}; recorded {_when(records['bad_input'])}):\n\n"]
    rows = [
        [f"`{module}`", _case(e), e["outcome"]] for module, mine in modules.items() for e in mine
    ]
    out.append(_table(["tests", "case", "outcome"], rows))
    return "".join(out)


BLOCKS: dict[str, Callable[[dict[str, dict[str, Any]]], str | None]] = {
    "faults": faults_block,
    "fault-rules": fault_rules_block,
    "api-fuzz": fuzz_block,
    "bad-input": bad_input_block,
}


def render(text: str, records: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """`text` with each generated block refilled; the names of blocks left as they were."""
    kept: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        maker = BLOCKS.get(name)
        body = maker(records) if maker else None
        if body is None:
            kept.append(name)
            return match.group(0)
        return f"{match.group(1)}{body}{match.group(4)}"

    return _BLOCK.sub(fill, text), kept


def main(argv: list[str] | None = None) -> int:
    from loopline.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m loopline.reliability", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--reports", type=Path, default=None, help="default: <data>/reports/reliability"
    )
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    args = parser.parse_args(argv)
    folder = args.reports or get_settings().reports_dir / "reliability"
    records = load(folder)
    if not records:
        print(f"no records in {folder}: run the tests with LOOPLINE_RELIABILITY_REPORT=1")
        return 2
    before = args.doc.read_text()
    after, kept = render(before, records)
    for name in kept:
        print(f"kept the {name!r} block as it was: nothing recorded for it in {folder}")
    if args.check:
        if after != before:
            print(f"{args.doc} is not up to date with {folder}")
            return 1
        return 0
    if after != before:
        args.doc.write_text(after)
        print(f"updated {args.doc} from {folder}")
    else:
        print(f"{args.doc} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
