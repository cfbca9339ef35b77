"""The expectation file (``interop/expected.yaml``): which cells pass.

A cell expected to pass that does not is a regression and fails the run; a
cell that newly passes, or is not listed yet, is reported, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .cells import FAIL, PASS, UNSUPPORTED, Cell

RESULTS = (PASS, FAIL, UNSUPPORTED)
HEADER = """\
# Interop expectations: testcase -> client -> server -> pass | unsupported | fail.
# A cell listed as pass that does not pass fails the run (a regression); a
# listed unsupported that turns into fail does too (a peer broke). Cells not
# listed are reported as new. Rewrite with:
#   atls-testbed interop --update-expected   (only the cells that ran change)
"""

Expectations = dict[str, dict[str, dict[str, str]]]


class ExpectationError(ValueError):
    """The expectation file is invalid."""


def load_expected(path: Path) -> Expectations:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ExpectationError(f"{path}: not valid YAML: {exc}") from None
    cells = data.get("cells", {}) if isinstance(data, dict) else None
    if not isinstance(cells, dict):
        raise ExpectationError(f"{path}: expected a mapping with 'cells'")
    for testcase, clients in cells.items():
        if not isinstance(clients, dict):
            raise ExpectationError(f"{path}: cells.{testcase}: expected client -> server map")
        for client, servers in clients.items():
            if not isinstance(servers, dict):
                raise ExpectationError(f"{path}: cells.{testcase}.{client}: expected a map")
            for server, result in servers.items():
                if result not in RESULTS:
                    raise ExpectationError(
                        f"{path}: cells.{testcase}.{client}.{server}: {result!r} is not "
                        f"one of {', '.join(RESULTS)}"
                    )
    return cells


def expected_of(expected: Expectations, cell: Cell) -> str | None:
    return expected.get(cell.testcase, {}).get(cell.client, {}).get(cell.server)


@dataclass
class Comparison:
    """How a run compares with the expectations."""

    regressions: list[tuple[Cell, str]] = field(default_factory=list)
    improvements: list[tuple[Cell, str]] = field(default_factory=list)
    new: list[Cell] = field(default_factory=list)
    changed: list[tuple[Cell, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions


def compare(expected: Expectations, cells: Iterable[Cell]) -> Comparison:
    result = Comparison()
    for cell in cells:
        want = expected_of(expected, cell)
        if want is None:
            result.new.append(cell)
        elif want == cell.result:
            continue
        elif want == PASS or (want == UNSUPPORTED and cell.result == FAIL):
            result.regressions.append((cell, want))
        elif cell.result == PASS:
            result.improvements.append((cell, want))
        else:
            result.changed.append((cell, want))
    return result


def update_expected(path: Path, cells: Iterable[Cell]) -> None:
    """Record the results of the cells that ran, keeping every other entry."""
    expected = load_expected(path)
    for cell in cells:
        expected.setdefault(cell.testcase, {}).setdefault(cell.client, {})[cell.server] = (
            cell.result
        )
    ordered = {
        t: {c: dict(sorted(s.items())) for c, s in sorted(cs.items())} for t, cs in expected.items()
    }
    body = yaml.safe_dump({"version": 1, "cells": ordered}, sort_keys=False)
    path.write_text(HEADER + body)
