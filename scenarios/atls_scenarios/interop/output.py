"""Matrix output: a table per test case (servers x clients), JSON, Markdown, HTML."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

from .cells import FAIL, PASS, UNSUPPORTED, Cell
from .registry import Implementation
from .testcases import TESTCASES

SYMBOL = {PASS: "pass", FAIL: "FAIL", UNSUPPORTED: "unsup"}
MD_SYMBOL = {PASS: "✅", FAIL: "❌", UNSUPPORTED: "➖"}
LEGEND = "`*` = OpenSSL underneath; rows are servers, columns clients"


def _grid(cells: Sequence[Cell], testcase: str) -> dict[tuple[str, str], Cell]:
    return {(c.server, c.client): c for c in cells if c.testcase == testcase}


def _order(cells: Sequence[Cell], impls: Sequence[Implementation], attr: str) -> list[str]:
    present = {getattr(c, attr) for c in cells}
    return [i.name for i in impls if i.name in present]


def _labels(impls: Sequence[Implementation]) -> dict[str, str]:
    return {i.name: i.label() for i in impls}


def testcases_in(cells: Sequence[Cell]) -> list[str]:
    seen = {c.testcase for c in cells}
    return [t for t in TESTCASES if t in seen] + sorted(seen - set(TESTCASES))


def text_tables(cells: Sequence[Cell], impls: Sequence[Implementation]) -> str:
    """Plain tables for the terminal."""
    labels = _labels(impls)
    out: list[str] = []
    for testcase in testcases_in(cells):
        grid = _grid(cells, testcase)
        clients = _order(cells, impls, "client")
        servers = _order(cells, impls, "server")
        first = max([len("server \\ client"), *(len(labels[s]) for s in servers)])
        widths = [max(6, len(labels[c])) for c in clients]
        out.append(
            f"== {testcase}: {TESTCASES[testcase].description if testcase in TESTCASES else ''}"
        )
        out.append("  ".join(["server \\ client".ljust(first), *(
            labels[c].ljust(w) for c, w in zip(clients, widths, strict=True))]))  # fmt: skip
        for server in servers:
            row = [labels[server].ljust(first)]
            for client, width in zip(clients, widths, strict=True):
                cell = grid.get((server, client))
                row.append((SYMBOL[cell.result] if cell else "-").ljust(width))
            out.append("  ".join(row).rstrip())
        out.append("")
    out.append("* = OpenSSL underneath")
    return "\n".join(out)


def summary_counts(cells: Sequence[Cell]) -> dict[str, int]:
    return {r: sum(1 for c in cells if c.result == r) for r in (PASS, UNSUPPORTED, FAIL)}


def _general(reason: str) -> str:
    """A reason without run-specific details (ports, key material), so equal ones merge."""
    reason = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", reason)
    reason = re.sub(r"\b[0-9a-f]{8,}\.\.\.", "...", reason)
    return re.sub(r"\(\d+(\.\d+)?s\)", "", reason).strip()[:240]


def markdown(cells: Sequence[Cell], impls: Sequence[Implementation]) -> str:
    labels = _labels(impls)
    counts = summary_counts(cells)
    lines = [
        f"{len(cells)} cells: {counts[PASS]} pass, {counts[UNSUPPORTED]} unsupported, "
        f"{counts[FAIL]} fail. ✅ pass, ➖ unsupported, ❌ fail; {LEGEND}.",
        "",
    ]
    present = {c.client for c in cells} | {c.server for c in cells}
    lines += ["| implementation | roles | stack | OpenSSL underneath |", "|---|---|---|---|"]
    for impl in impls:
        if impl.name in present:
            lines.append(f"| {impl.label()} | {', '.join(impl.roles)} | {impl.stack} | "
                         f"{'yes' if impl.openssl_based else 'no (independent)'} |")  # fmt: skip
    lines.append("")
    notes: list[str] = []
    for testcase in testcases_in(cells):
        grid = _grid(cells, testcase)
        clients = _order(cells, impls, "client")
        servers = _order(cells, impls, "server")
        description = TESTCASES[testcase].description if testcase in TESTCASES else ""
        lines += [f"**{testcase}**: {description}", ""]
        lines.append("| server \\ client | " + " | ".join(labels[c] for c in clients) + " |")
        lines.append("|---|" + "---|" * len(clients))
        for server in servers:
            row = []
            for client in clients:
                cell = grid.get((server, client))
                if cell is None:
                    row.append(" ")
                    continue
                mark = MD_SYMBOL[cell.result]
                if cell.result != PASS:
                    note = f"{cell.result}: {_general(cell.reason)}"
                    if note not in notes:
                        notes.append(note)
                    mark += f"<sup>{notes.index(note) + 1}</sup>"
                row.append(mark)
            lines.append(f"| {labels[server]} | " + " | ".join(row) + " |")
        lines.append("")
    if notes:
        lines.append("Notes (the same reason shares a number):")
        lines.append("")
        lines += [f"{i}. {n.replace('|', '/')}" for i, n in enumerate(notes, 1)]
        lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin-bottom:2em}
td,th{border:1px solid #999;padding:.3em .6em;text-align:center}
td.pass{background:#c8f7c5} td.fail{background:#f7c5c5} td.unsupported{background:#eee}
td a{color:inherit;text-decoration:none} th.row{text-align:left}
"""


def html_page(cells: Sequence[Cell], impls: Sequence[Implementation], title: str) -> str:
    labels = _labels(impls)
    counts = summary_counts(cells)
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><h1>{html.escape(title)}</h1>",
        f"<p>{len(cells)} cells: {counts[PASS]} pass, {counts[UNSUPPORTED]} unsupported, "
        f"{counts[FAIL]} fail. * = OpenSSL underneath. Rows are servers, columns clients; "
        "each cell links to its folder (logs of both ends, audit lines, flows, key logs); "
        "hover for the reason.</p>",
    ]
    for testcase in testcases_in(cells):
        grid = _grid(cells, testcase)
        clients = _order(cells, impls, "client")
        servers = _order(cells, impls, "server")
        description = TESTCASES[testcase].description if testcase in TESTCASES else ""
        parts.append(f"<h2>{html.escape(testcase)}</h2><p>{html.escape(description)}</p>")
        parts.append("<table><tr><th>server \\ client</th>")
        parts += [f"<th>{html.escape(labels[c])}</th>" for c in clients]
        parts.append("</tr>")
        for server in servers:
            parts.append(f"<tr><th class=row>{html.escape(labels[server])}</th>")
            for client in clients:
                cell = grid.get((server, client))
                if cell is None:
                    parts.append("<td></td>")
                    continue
                tip = html.escape(f"{cell.reason} ({cell.duration:.1f}s)", quote=True)
                parts.append(
                    f'<td class="{cell.result}" title="{tip}">'
                    f'<a href="{html.escape(cell.path)}/">{SYMBOL[cell.result]}</a></td>'
                )
            parts.append("</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def write_outputs(
    out: Path, cells: Sequence[Cell], impls: Sequence[Implementation], title: str
) -> None:
    """matrix.json (the list of cells), matrix.md, index.html."""
    (out / "matrix.json").write_text(json.dumps([c.to_json() for c in cells], indent=2) + "\n")
    (out / "matrix.md").write_text(markdown(cells, impls))
    (out / "index.html").write_text(html_page(cells, impls, title))
