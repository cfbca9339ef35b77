"""``report.html`` for a run: checks, the middlebox's decisions and a timeline picture.

``report.json`` and ``junit.xml`` are for machines; this page is for the person
who ran the scenario. The picture (``timeline.png``, matplotlib, also embedded
in the page so the file stands alone) shows every device's bootstrap steps
with failures marked; beyond ``TIMELINE_MAX_DEVICES`` one line per device is
unreadable, so it shows latency histograms instead.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from .expect import Check
from .local_engine import Observations
from .scenario import Scenario

TIMELINE_MAX_DEVICES = 12
# One colour per bootstrap step (clients/atls_client/bootstrap.py STEPS), colour-blind safe.
STEP_COLOURS = {
    "probe": "#4477AA",
    "atls": "#66CCEE",
    "report": "#BBBBBB",
    "voucher": "#228833",
    "cacerts": "#CCBB44",
    "install": "#AA3377",
    "network_tls": "#EE6677",
    "app_request": "#777777",
}
FAILED = "#CC0000"
EXPECTED_FAILURE = "#E69F00"  # a failure the scenario expects (e.g. the first probe)


def write_html_report(
    run_dir: Path,
    scenario: Scenario,
    engine: str,
    obs: Observations,
    checks: list[Check],
    seconds: float,
) -> Path:
    """Write ``timeline.png`` and ``report.html`` into ``run_dir``; return the page's path."""
    picture = run_dir / "timeline.png"
    if len(obs.devices) > TIMELINE_MAX_DEVICES:
        draw_histograms(obs.devices, picture, scenario.name)
        kind = "latency histograms of all devices"
    else:
        steps = scenario.expect.get("steps") or {}
        expected = {name for name, state in steps.items() if state == "failed"}
        draw_timeline(obs.devices, picture, scenario.name, expected)
        kind = "timeline of every device's bootstrap steps"
    page = run_dir / "report.html"
    page.write_text(render_page(scenario, engine, obs, checks, seconds, picture, kind))
    return page


def _steps(device: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in device.get("steps") or [] if isinstance(s, dict)]


def _figure(width: float, height: float) -> Any:
    # Imported here: matplotlib is slow to import and only reports need it.
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def draw_timeline(
    devices: list[dict[str, Any]],
    path: Path,
    title: str,
    expected_failures: AbstractSet[str] = frozenset(),
) -> None:
    """One row per device, one bar per step in order; failed steps edged with an x.

    Red marks a failure the scenario did not expect, orange one it did (the
    bootstrap's first probe fails by design), so the eye goes to the surprises.
    """
    from matplotlib.patches import Patch

    rows = max(len(devices), 1)
    fig = _figure(10, 1.6 + 0.55 * rows)
    ax = fig.add_subplot()
    seen: set[str] = set()
    longest = 0.0
    for row, device in enumerate(devices):
        at = 0.0
        for step in _steps(device):
            ms = float(step.get("ms") or 0.0)
            name = str(step.get("name"))
            ok = step.get("ok")
            colour = STEP_COLOURS.get(name, "#999999")
            seen.add(name)
            mark = EXPECTED_FAILURE if name in expected_failures else FAILED
            width = max(ms, 0.3)  # a skipped or instant step still shows
            ax.barh(
                row,
                width,
                left=at,
                height=0.6,
                color=colour if ok is not None else "white",
                edgecolor=mark if ok is False else ("#999999" if ok is None else "black"),
                linewidth=2.2 if ok is False else 0.6,
                hatch="//" if ok is None else None,
            )
            if ok is False:
                ax.plot(at + width / 2, row, marker="x", color=mark, markersize=11, mew=2.5)
            at += ms
        longest = max(longest, at)
        exit_code = device.get("exit_code")
        attempts = device.get("handshake_attempts") or 0
        retried = f", {attempts} handshakes" if attempts > 1 else ""
        ax.text(
            at + longest * 0.01 + 0.5,
            row,
            f" {device.get('result', '?')} (exit {exit_code}{retried})",
            va="center",
            fontsize=9,
            color=FAILED if exit_code else "black",
        )
    ax.set_yticks(range(len(devices)), [str(d.get("device", "?")) for d in devices])
    ax.invert_yaxis()
    ax.set_xlim(0, max(longest, 1.0) * 1.3)
    ax.set_xlabel("milliseconds since the device started")
    ax.set_title(
        f"{title}: steps per device (x = failed: red unexpected, orange expected; "
        "hatched = skipped)"
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=STEP_COLOURS[n], label=n) for n in STEP_COLOURS if n in seen]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    if not devices:
        ax.text(0.5, 0.5, "no device reports", transform=ax.transAxes, ha="center")
    fig.savefig(path)


def draw_histograms(devices: list[dict[str, Any]], path: Path, title: str) -> None:
    """Many devices: total bootstrap time (succeeded vs failed), then the ATLS handshake."""
    fig = _figure(10, 4.2)
    total_ax, atls_ax = fig.subplots(1, 2)
    ok_totals: list[float] = []
    failed_totals: list[float] = []
    atls_ms: list[float] = []
    for device in devices:
        steps = _steps(device)
        total = sum(float(s.get("ms") or 0.0) for s in steps)
        (failed_totals if device.get("exit_code") else ok_totals).append(total)
        atls_ms += [float(s.get("ms") or 0.0) for s in steps if s.get("name") == "atls"]
    total_ax.hist(
        [ok_totals, failed_totals],
        bins=20,
        stacked=True,
        color=[STEP_COLOURS["voucher"], FAILED],
        label=[f"succeeded ({len(ok_totals)})", f"failed ({len(failed_totals)})"],
    )
    total_ax.set_xlabel("bootstrap time per device, ms (sum of steps)")
    total_ax.set_ylabel("devices")
    total_ax.legend(fontsize=8)
    total_ax.set_title(f"{title}: {len(devices)} devices")
    atls_ax.hist(atls_ms or [0.0], bins=20, color=STEP_COLOURS["atls"])
    atls_ax.set_xlabel("ATLS step (handshake incl. retries), ms")
    atls_ax.set_ylabel("devices")
    atls_ax.set_title("ATLS step latency")
    for ax in (total_ax, atls_ax):
        ax.grid(alpha=0.3)
    fig.savefig(path)


def _decisions(audit: list[dict[str, Any]]) -> tuple[Counter[tuple[str, ...]], list[list[str]]]:
    counts: Counter[tuple[str, ...]] = Counter()
    rows = []
    for line in audit:
        key = (
            str(line.get("decision")),
            str(line.get("rule")),
            str(line.get("variant")),
            str(line.get("direction")),
        )
        counts[key] += 1
        summary = line.get("summary") or {}
        messages = ", ".join(summary.get("handshake") or []) or "-"
        fault = line.get("fault")
        rows.append(
            [
                str(line.get("client", "")),
                str(line.get("direction", "")),
                str(line.get("flight", "")),
                str(line.get("variant", "")),
                f"{summary.get('bytes', '?')} B, {messages}",
                str(line.get("rule", "")),
                str(line.get("decision", "")),
                "" if fault is None else str(fault),
            ]
        )
    return counts, rows


def _table(head: list[str], rows: list[list[str]], row_class: list[str] | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


MAX_FLIGHT_ROWS = 300

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.fail td { background: #fde8e8; }
.verdict { font-size: 1.3em; font-weight: bold; }
.pass { color: #1a7f37; } .failed { color: #c00; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def render_page(
    scenario: Scenario,
    engine: str,
    obs: Observations,
    checks: list[Check],
    seconds: float,
    picture: Path,
    kind: str,
) -> str:
    ok = bool(checks) and all(c.ok for c in checks)
    passed = sum(c.ok for c in checks)
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ATLS testbed: {esc(scenario.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Scenario {esc(scenario.name)}</h1>",
        f"<p>{esc(scenario.description)}</p>",
        f'<p class="verdict {"pass" if ok else "failed"}">'
        f"{'PASSED' if ok else 'FAILED'}: {passed} of {len(checks)} checks</p>",
        f"<p>engine {esc(engine)}, {len(obs.devices)} devices, {seconds:.1f} s</p>",
        "<h2>Checks</h2>",
        _table(
            ["check", "result", "expected", "actual"],
            [[c.name, "PASS" if c.ok else "FAIL", c.expected, c.actual] for c in checks],
            ["" if c.ok else "fail" for c in checks],
        ),
        "<h2>Timeline</h2>",
    ]
    data = base64.b64encode(picture.read_bytes()).decode()
    parts.append(
        f'<p><img alt="{esc(kind)} ({picture.name})" src="data:image/png;base64,{data}"></p>'
    )
    counts, flights = _decisions(obs.audit)
    parts.append("<h2>Middlebox decisions</h2>")
    if not obs.audit:
        parts.append("<p>No ATLS flights in the audit log (no middlebox, or none seen).</p>")
    else:
        parts.append(
            _table(
                ["decision", "rule", "variant", "direction", "flights"],
                [[*key, str(n)] for key, n in sorted(counts.items())],
            )
        )
        shown = flights[:MAX_FLIGHT_ROWS]
        more = len(flights) - len(shown)
        parts.append(
            f"<details><summary>every flight ({len(flights)}"
            f"{f', first {len(shown)} shown' if more else ''})</summary>"
        )
        parts.append(
            _table(
                ["client", "direction", "flight", "variant", "seen", "rule", "decision", "fault"],
                shown,
            )
        )
        parts.append("</details>")
    parts.append("<h2>Devices</h2>")
    device_rows = []
    for d in obs.devices:
        failed = [str(s.get("name")) for s in _steps(d) if s.get("ok") is False]
        device_rows.append(
            [
                str(d.get("device", "?")),
                str(d.get("result", "?")),
                str(d.get("exit_code", "?")),
                str(d.get("handshake_attempts", "?")),
                ", ".join(failed) or "-",
                str(d.get("error") or ""),
            ]
        )
    parts.append(
        _table(
            ["device", "result", "exit", "handshakes", "failed steps", "error"],
            device_rows,
            ["fail" if d.get("exit_code") else "" for d in obs.devices],
        )
    )
    if obs.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{esc(n)}</li>" for n in obs.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
