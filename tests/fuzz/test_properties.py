"""Property-based fuzzing (hypothesis) of every target, and the corpus replayed.

Bounded for CI: ``ATLS_FUZZ_EXAMPLES`` examples per target (default 300). Every
input in ``corpus/<target>/`` (seeds and crashes found earlier) runs each time.
"""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .targets import TARGETS, corpus

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("ATLS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

REPLAY = [(name, file, data) for name in TARGETS for file, data in corpus(name)]


@pytest.mark.parametrize(("target", "file", "data"), REPLAY, ids=[f"{t}/{f}" for t, f, _ in REPLAY])
def test_corpus_replays_cleanly(target, file, data):
    TARGETS[target](data)


def _mutated(name: str) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and corpus inputs with bytes flipped, cut or spliced."""
    seeds = [data for _, data in corpus(name)] or [b""]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 4))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            kind = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
            if kind == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif kind == "cut":
                del data[at : at + draw(st.integers(1, 64))]
            elif kind == "insert":
                data[at:at] = draw(st.binary(max_size=32))
            else:
                data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        return bytes(data)

    return st.one_of(st.binary(max_size=4096), mutate())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_never_fails(target):
    @FUZZ
    @given(data=_mutated(target))
    def run(data: bytes) -> None:
        TARGETS[target](data)

    run()


# -- the whole service app: no input gets a 5xx, every refusal is a problem document ---------

PATHS = [
    "/.well-known/atls",
    "/atls",
    "/api/echo",
    "/api/hello",
    "/healthz",
    "/bootstrap/voucher",
    "/bootstrap/cacerts",
    "/bootstrap/transport-report",
    "/operator/domains/lab",
    "/operator/domains/lab/claims",
    "/operator/events",
    "/healthz/",
    "/nowhere",
]


@functools.cache
def _app():  # type: ignore[no-untyped-def]
    from atls_service.app import ServiceSettings, create_app

    from .targets import _pki

    return create_app(ServiceSettings.from_pki(_pki().root, operator_token="fuzz-token"))


def test_service_never_answers_5xx():
    import asyncio

    import httpx

    seeds = [data for _, data in corpus("server_driver")]

    @FUZZ
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        path=st.one_of(
            st.sampled_from(PATHS), st.text(min_size=1, max_size=30).map(lambda t: "/" + t)
        ),
        content_type=st.sampled_from(
            ["application/atls", "application/tls", "application/json", "text/plain", ""]
        ),
        encoding=st.sampled_from(["", "aes128gcm", "gzip"]),
        mode=st.sampled_from(["", "export", "records", "bogus"]),
        cookie=st.one_of(st.just(""), st.text(alphabet="abcdef0123456789-_", max_size=40)),
        token=st.sampled_from(["", "Bearer fuzz-token", "Bearer wrong"]),
        body=st.one_of(st.binary(max_size=2048), st.sampled_from(seeds or [b""])),
    )
    def run(method, path, content_type, encoding, mode, cookie, token, body):  # type: ignore[no-untyped-def]
        headers = {
            k: v
            for k, v in {
                "content-type": content_type,
                "content-encoding": encoding,
                "atls-mode": mode,
                "cookie": f"atls_session={cookie}" if cookie else "",
                "authorization": token,
            }.items()
            if v
        }

        async def once() -> httpx.Response:
            transport = httpx.ASGITransport(app=_app(), client=("10.1.2.3", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="https://svc") as http:
                return await http.request(method, path, headers=headers, content=body)

        try:
            response = asyncio.run(once())
        except httpx.InvalidURL:
            return
        assert response.status_code < 500, (response.status_code, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text

    run()
