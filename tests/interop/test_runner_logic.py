"""The interop runner's pure parts: registry, test cases, expectations, judging, output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from atls_policy.policy import load_policy
from atls_scenarios.interop.cells import FAIL, PASS, UNSUPPORTED, Cell, judge
from atls_scenarios.interop.certs import make_run_certs
from atls_scenarios.interop.expected import (
    ExpectationError,
    compare,
    load_expected,
    update_expected,
)
from atls_scenarios.interop.output import markdown, text_tables
from atls_scenarios.interop.registry import (
    Implementation,
    RegistryError,
    load_registry,
    select,
)
from atls_scenarios.interop.testcases import TESTCASES

ROOT = Path(__file__).resolve().parents[2]


def _registry(tmp_path: Path, entries: object) -> Path:
    path = tmp_path / "implementations.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "implementations": entries}))
    return path


def test_the_repository_registry_loads_with_ours_and_tlslite() -> None:
    impls = load_registry(ROOT / "interop" / "implementations.yaml")
    names = [i.name for i in impls]
    assert {"ours", "tlslite-ng"} <= set(names)
    assert len(names) == len(set(names))
    ours = next(i for i in impls if i.name == "ours")
    assert ours.openssl_based and ours.label() == "ours*"
    assert not next(i for i in impls if i.name == "tlslite-ng").openssl_based


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "Bad Name", "roles": ["client"], "command": "x"}, "is not a name"),
        ({"name": "a", "roles": ["peer"], "command": "x"}, "roles"),
        ({"name": "a", "roles": [], "command": "x"}, "roles"),
        ({"name": "a", "roles": ["client"]}, "needs a command"),
        ({"name": "a", "roles": ["client"], "command": "x", "colour": 1}, "unknown field"),
        ({"name": "a", "roles": ["client"], "command": "x", "openssl_based": "yes"}, "true or"),
        ("just a string", "must be a mapping"),
    ],
)
def test_registry_mistakes_name_the_entry_and_field(
    tmp_path: Path, entry: object, message: str
) -> None:
    with pytest.raises(RegistryError, match=message) as info:
        load_registry(_registry(tmp_path, [entry]))
    assert "implementations[0]" in str(info.value)


def test_registry_rejects_duplicates_and_garbage(tmp_path: Path) -> None:
    entry = {"name": "a", "roles": ["client"], "command": "x"}
    with pytest.raises(RegistryError, match="listed twice"):
        load_registry(_registry(tmp_path, [entry, entry]))
    (tmp_path / "bad.yaml").write_text("implementations: [unclosed")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(tmp_path / "bad.yaml")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")


def test_select_by_role_and_name() -> None:
    a = Implementation("a", ("client",), command="x")
    b = Implementation("b", ("client", "server"), command="y")
    assert select([a, b], None, "server") == [b]
    assert select([a, b], ["b", "a"], "client") == [b, a]
    with pytest.raises(RegistryError, match="cannot act as server"):
        select([a, b], ["a"], "server")
    with pytest.raises(RegistryError, match="unknown implementation"):
        select([a, b], ["zz"], "client")


def test_every_test_case_policy_is_valid_for_the_addon(tmp_path: Path) -> None:
    for case in TESTCASES.values():
        path = tmp_path / f"{case.name}.yaml"
        path.write_text(yaml.safe_dump(case.policy()))
        load_policy(path)  # raises PolicyError with the place on a mistake
    assert TESTCASES["flight-loss"].policy()["rules"][0]["fault"] == {
        "type": "drop",
        "max_times": 1,
    }


def test_certs_layout_follows_the_contract(tmp_path: Path) -> None:
    certs = make_run_certs(tmp_path)
    for name in ("ca.pem", "ca.der", "cert.pem", "key.pem", "cert.der", "key.der",
                 "identity.p12", "server-name"):  # fmt: skip
        assert (certs.server / name).exists(), name
        assert (certs.client / name).exists(), name
    assert (certs.server / "server-name").read_text().strip() == "atls-service"
    assert not (certs.client_without_cert / "cert.pem").exists()
    assert not (certs.client_without_cert / "identity.p12").exists()
    assert (certs.client_wrong_anchor / "ca.pem").read_bytes() != (
        certs.client / "ca.pem"
    ).read_bytes()
    from cryptography.hazmat.primitives.serialization import pkcs12

    bundle = pkcs12.load_pkcs12((certs.client / "identity.p12").read_bytes(), b"atls")
    assert bundle.key is not None and bundle.cert is not None


def _cell(testcase: str, result: str, client: str = "a", server: str = "b") -> Cell:
    return Cell(client, server, testcase, result, "why", 1.0)


def test_expectations_regression_improvement_new(tmp_path: Path) -> None:
    path = tmp_path / "expected.yaml"
    update_expected(path, [_cell("records", PASS), _cell("exporter", FAIL),
                           _cell("dtls12", UNSUPPORTED)])  # fmt: skip
    expected = load_expected(path)
    assert expected["records"]["a"]["b"] == PASS
    result = compare(
        expected,
        [
            _cell("records", FAIL),  # regression
            _cell("exporter", PASS),  # newly passing
            _cell("dtls12", FAIL),  # unsupported -> fail: a peer broke
            _cell("chacha20", PASS),  # not listed
        ],
    )
    assert [c.testcase for c, _ in result.regressions] == ["records", "dtls12"]
    assert [c.testcase for c, _ in result.improvements] == ["exporter"]
    assert [c.testcase for c in result.new] == ["chacha20"]
    assert not result.ok
    assert compare(expected, [_cell("records", PASS)]).ok


def test_bad_expectation_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "expected.yaml"
    path.write_text("version: 1\ncells: {records: {a: {b: maybe}}}\n")
    with pytest.raises(ExpectationError, match="cells.records.a.b: 'maybe'"):
        load_expected(path)


def _judge_dir(tmp_path: Path, client_export: str | None, server_export: str | None) -> Path:
    (tmp_path / "client.log").write_text("did things\nlast words\n")
    (tmp_path / "server.log").write_text("")
    line = {"direction": "request", "variant": "current", "decision": "allow"}
    (tmp_path / "audit.jsonl").write_text(json.dumps(line) + "\n")
    for side, value in (("client", client_export), ("server", server_export)):
        if value is not None:
            (tmp_path / f"{side}-export.txt").write_text(value + "\n")
    return tmp_path


def test_judge_rules(tmp_path: Path) -> None:
    a = Implementation("a", ("client",), command="x")
    b = Implementation("b", ("server",), command="y")
    same = "ab" * 32
    d = _judge_dir(tmp_path, same, same)
    assert judge(TESTCASES["handshake-tls13"], a, b, 0, d, True, 20)[0] == PASS
    assert judge(TESTCASES["wrong-anchor"], a, b, 0, d, True, 20) == (
        FAIL, "client succeeded where it must fail")  # fmt: skip
    assert judge(TESTCASES["handshake-tls13"], a, b, None, d, True, 20)[0] == FAIL
    assert judge(TESTCASES["handshake-tls13"], a, b, 0, d, False, 20)[1].startswith("server b died")
    result, reason = judge(TESTCASES["exporter"], a, b, 127, d, True, 20)
    assert (result, reason) == (UNSUPPORTED, "client a: last words")
    (d / "server-export.txt").write_text("cd" * 32)
    assert judge(TESTCASES["exporter"], a, b, 0, d, True, 20)[1].startswith("exports differ")
    (d / "server-export.txt").unlink()
    assert judge(TESTCASES["exporter"], a, b, 0, d, True, 20) == (FAIL, "server wrote no export")
    result, reason = judge(TESTCASES["records"], a, b, 0, d, True, 20)
    assert result == PASS and "no export from server" in reason


def test_dtls12_passes_only_when_the_middlebox_saw_dtls_records(tmp_path: Path) -> None:
    a = Implementation("a", ("client",), command="x")
    b = Implementation("b", ("server",), command="y")
    d = _judge_dir(tmp_path, "ab" * 32, "ab" * 32)

    def audit(*records: dict[str, object]) -> None:
        line = {"direction": "request", "variant": "current", "decision": "allow",
                "summary": {"records": list(records)}}  # fmt: skip
        (d / "audit.jsonl").write_text(json.dumps(line) + "\n")

    audit({"type": "handshake", "length": 200, "epoch": 0, "seq": 0})
    assert judge(TESTCASES["dtls12"], a, b, 0, d, True, 20)[0] == PASS
    audit({"type": "handshake", "length": 200})  # a TLS record: the client did not run DTLS
    assert judge(TESTCASES["dtls12"], a, b, 0, d, True, 20) == (
        FAIL, "the middlebox saw a flight that is not DTLS records")  # fmt: skip
    assert judge(TESTCASES["records"], a, b, 0, d, True, 20)[0] == PASS


def test_tables_and_markdown_mark_openssl() -> None:
    impls = [Implementation("ours", ("client", "server"), command="x", openssl_based=True),
             Implementation("pure", ("client", "server"), command="y")]  # fmt: skip
    cells = [
        Cell("ours", "pure", "records", PASS, "ok", 1.0),
        Cell("pure", "pure", "records", UNSUPPORTED, "no records | here", 1.0),
    ]
    text = text_tables(cells, impls)
    assert "ours*" in text and "unsup" in text
    md = markdown(cells, impls)
    assert "| server \\ client | ours* | pure |" in md
    assert "no records / here" in md  # a reason never breaks the table


def test_readme_matrix_is_replaced_between_markers(tmp_path: Path) -> None:
    from atls_scenarios.interop.runner import README_END, README_START, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nold\n{README_END}\n## after\n")
    update_readme(readme, "| new |\n")
    assert readme.read_text() == f"# x\n{README_START}\n| new |\n{README_END}\n## after\n"
    readme.write_text("no markers")
    with pytest.raises(RegistryError, match="markers"):
        update_readme(readme, "x")


def test_a_peer_that_cannot_start_is_a_failure_not_unsupported(tmp_path: Path) -> None:
    a = Implementation("a", ("client",), command="x")
    b = Implementation("b", ("server",), command="y")
    d = _judge_dir(tmp_path, None, None)
    (d / "client.log").write_text(
        "bash: line 1: interop/.build/a/peer: No such file or directory\n"
    )
    result, reason = judge(TESTCASES["records"], a, b, 127, d, True, 20)
    assert result == FAIL and reason.startswith("client a could not start")
