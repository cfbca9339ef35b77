"""Fuzz targets: one function per parser, ``target(data: bytes) -> None``.

A target raises only when it found a defect: an exception outside the
parser's documented error type, a result that breaks an invariant (for the
server driver: an outcome that is not a reply, a request or a refusal; for the
observer: a summary that is not JSON-able). Hypothesis (``test_properties``)
and atheris (``run_atheris``) drive the same targets; inputs that once failed
live in ``corpus/<target>/`` and are replayed by every test run.
"""

from __future__ import annotations

import datetime
import functools
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from atls.cacerts import BundleError, decode_cacerts, vouched_anchors
from atls.config import Mode
from atls.inner_http import InnerHTTPError, decode_request, decode_response
from atls.pki import PKIDirectory, init_pki
from atls.records import RecordError, parse_records
from atls.server import ApplicationRequest, Coding, Refused, Reply, ServerDriver
from atls.session import Role, TLSConfig, TLSContext
from atls.store import SessionLimits, SessionStore
from atls.voucher import VoucherError, verify_voucher

CORPUS = Path(__file__).parent / "corpus"
NOW = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)


@functools.cache
def _pki() -> PKIDirectory:
    return init_pki(Path(tempfile.mkdtemp(prefix="atls-fuzz-pki-")), device_serials=["fuzz-1"])


@functools.cache
def _server_context() -> TLSContext:
    pki = _pki()
    return TLSConfig(
        Role.SERVER,
        identity=pki.service(),
        trust_anchors=pki.vendor_ca().cert_pem,
        require_client_certificate=True,
    ).build()


def _chunks(data: bytes, parts: int) -> list[bytes]:
    """Split an input into up to ``parts`` messages at 0xFF 0x00 0xFF markers."""
    return data.split(b"\xff\x00\xff", parts - 1)


def server_driver(data: bytes) -> None:
    """Up to three messages of one session, each TLS-coded or protected by its first byte."""
    store = SessionStore(SessionLimits(max_flight_bytes=16384))
    driver = ServerDriver(_server_context(), store)
    handle: str | None = None
    for n, part in enumerate(_chunks(data, 3)):
        selector, body = (part[0], part[1:]) if part else (0, b"")
        coding = Coding.PROTECTED if selector & 1 else Coding.TLS
        mode = Mode.EXPORT if selector & 2 else Mode.RECORDS
        use_handle = handle if (n and not selector & 4) else ("bogus" if selector & 8 else None)
        outcome = driver.receive(use_handle, coding, body, client="10.0.0.9", mode=mode)
        if not isinstance(outcome, Reply | ApplicationRequest | Refused):
            raise AssertionError(f"the driver returned {outcome!r}")
        if isinstance(outcome, ApplicationRequest):
            outcome = driver.respond(outcome, b"HTTP/1.1 204 No Content\r\n\r\n")
        if isinstance(outcome, Reply) and outcome.new_session:
            handle = outcome.handle
    store.sweep()


def records(data: bytes) -> None:
    try:
        parsed = parse_records(data)
    except RecordError:
        return
    if sum(r.wire_length for r in parsed) != len(data):
        raise AssertionError("records do not cover the input exactly")


def observer(data: bytes) -> None:
    """The middlebox's summary of a flight: record, ClientHello, ServerHello, Certificate."""
    from atls_policy.detect import classify_request, classify_response
    from atls_policy.observe import FlightSummary, _summarize_into

    for encoding in (None, "aes128gcm"):
        summary = FlightSummary(bytes=len(data))
        _summarize_into(summary, data, encoding)  # no catch-all here: any exception is a bug
        json.dumps(summary.to_dict())
        summary.one_line()
        _ = summary.record_state
    classify_request("POST", "/x", "application/octet-stream", data, True)
    classify_response("application/octet-stream", data, True)


def voucher(data: bytes) -> None:
    pki = _pki()
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        verify_voucher(
            document,
            vendor_anchor=pki.vendor_ca().certificate,
            serial_number="fuzz-1",
            nonce="AAAAAAAAAAAAAAAAAAAAAA==",
            now=NOW,
        )
    except VoucherError:
        return


def cacerts(data: bytes) -> None:
    try:
        bundle = decode_cacerts(data)
        vouched_anchors(bundle, bundle[0], now=NOW)
    except BundleError:
        return


def policy(data: bytes) -> None:
    from atls_policy.policy import PolicyError, parse_policy

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError:
        return


def inner_http(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        try:
            decode(data)
        except InnerHTTPError:
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "server_driver": server_driver,
    "records": records,
    "observer": observer,
    "voucher": voucher,
    "cacerts": cacerts,
    "policy": policy,
    "inner_http": inner_http,
}


def corpus(name: str) -> list[tuple[str, bytes]]:
    folder = CORPUS / name
    if not folder.is_dir():
        return []
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
