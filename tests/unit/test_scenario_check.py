"""``atls-testbed scenario check``: valid files pass, invalid ones name the place and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from atls_scenarios.cli import main
from atls_scenarios.scenario import definitions_dir, load_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "scenarios" / "examples").glob("*.yaml"))


def test_there_are_three_examples_to_copy_from():
    assert len(EXAMPLES) >= 3


def test_shipped_scenarios_and_examples_check_clean(capsys):
    files = [*sorted(definitions_dir().glob("*.yaml")), *EXAMPLES]
    assert main(["scenario", "check", *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok: scenario ") == len(files)
    assert "slow-server-first-flight, 1 device(s), policy with 1 rule(s)" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\nnope: 1\n", "unknown key 'nope'"),
        ("description: no name\n", "name is required"),
        ("name: x\ndevices: {retries: two}\n", "devices.retries must be a whole number"),
        ("name: x\ndevices: {timeout: 0}\n", "devices.timeout must be a number of seconds > 0"),
        ("name: x\ndevices: {count: 0}\n", "devices.count must be a positive whole number"),
        ("name: x\ndevices: {mode: fast}\n", "devices.mode is 'export' or 'records'"),
        ("name: x\ndevices: {tls_version: 1.1}\n", "devices.tls_version is 1.2 or 1.3"),
        (
            "name: x\ntopology: {middlebox: yes please}\n",
            "topology.middlebox must be true or false",
        ),
        (
            "name: x\npolicy: {rules: [{id: a, match: {client: 10.0.0.0/33}, action: block}]}\n",
            "policy: rules[0].match.client: '10.0.0.0/33' is not an IP address or network",
        ),
        ("name: x\nexpect: {exit_code: zero}\n", "expect.exit_code must be a whole number"),
        ("name: x\nexpect: {steps: {vouch: ok}}\n", "expect.steps: unknown key 'vouch'"),
        ("name: x\nexpect: {steps: {atls: fine}}\n", "expect.steps.atls is one of"),
        (
            "name: x\nexpect: {audit: {decisions: [allow, blok]}}\n",
            "expect.audit.decisions[1]: 'blok' is not one of allow, block, fault",
        ),
        (
            "name: x\nexpect: {service_events: {voucher-issued: all}}\n",
            "expect.service_events.voucher-issued: 'all' is not a count",
        ),
        ("name: x\nfaults: [unplug]\n", "faults is a list of restart-middlebox"),
        ("name: x\ndevices: {count: 1\n", "while parsing a flow mapping"),
    ],
)
def test_invalid_files_say_where_and_what(tmp_path, capsys, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["scenario", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"atls-testbed: {path}"), err
    assert problem in err, err


def test_every_file_is_checked_and_a_missing_one_is_named(tmp_path, capsys):
    assert main(["scenario", "check", str(EXAMPLES[0]), str(tmp_path / "gone.yaml")]) == 2
    captured = capsys.readouterr()
    assert ": ok: scenario " in captured.out
    assert "gone.yaml: no such file" in captured.err


def test_tls_version_may_be_written_as_a_number(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("name: old\ndevices: {tls_version: 1.2}\n")
    assert load_scenario(path).devices.tls_version == "1.2"
