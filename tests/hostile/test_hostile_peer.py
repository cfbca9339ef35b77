"""The hostile ATLS peer against the server driver, in memory (issue #12).

Every case's messages get a reply or a documented refusal, never an
exception; the case's last message gets the refusal it deserves; a session
established before the attack keeps working and a new handshake succeeds.
"""

from __future__ import annotations

import pytest

from atls.config import Mode
from atls.events import ApplicationData
from atls.http_binding import Problem
from atls.inner_http import InnerRequest, InnerResponse, encode_request, encode_response
from atls.server import ApplicationRequest, Coding, Refused, ServerDriver
from atls.session import ATLSSession, TLSVersion
from atls.store import SessionLimits, SessionStore
from tests.conftest import client_config

from .peer import CASES, EXPECTED_LAST, Answer, Channel

DOCUMENTED = {200, 400, 404, 409, 410, 413, 415, 429}


class MemoryChannel:
    def __init__(self, driver: ServerDriver, client: str = "10.6.6.6") -> None:
        self.driver = driver
        self.client = client

    def post(self, body: bytes, cookie: str | None) -> Answer:
        outcome = self.driver.receive(
            cookie, Coding.TLS, body, client=self.client, mode=Mode.RECORDS
        )
        if isinstance(outcome, Refused):
            problem = Problem.from_refusal(outcome.refusal)
            return Answer(problem.status, problem.slug, problem.to_json(), None)
        if isinstance(outcome, ApplicationRequest):
            answer = encode_response(InnerResponse(200, [("content-type", "text/plain")], b"ok"))
            outcome = self.driver.respond(outcome, answer)
        return Answer(200, None, outcome.body, outcome.handle if outcome.new_session else None)


def establish(channel: Channel, pki) -> tuple[ATLSSession, str]:
    client = ATLSSession(client_config(pki, TLSVersion.TLS1_3).build())
    first = channel.post(client.initiate(), None)
    assert first.status == 200 and first.cookie, first
    client.receive_flight(first.body)
    second = channel.post(client.data_to_send(), first.cookie)
    assert second.status == 200, second
    if second.body:
        client.receive_flight(second.body)
    assert client.handshake_complete
    return client, first.cookie


def roundtrip(channel: Channel, client: ATLSSession, cookie: str) -> None:
    client.send(encode_request(InnerRequest("GET", "/api/hello", [], b"")))
    answer = channel.post(client.data_to_send(), cookie)
    assert answer.status == 200, answer
    events = client.receive_flight(answer.body)
    assert any(isinstance(e, ApplicationData) for e in events), events


def check_case(name: str, answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status in DOCUMENTED, (name, answer.status, answer.body[:300])
        if answer.status != 200:
            assert answer.slug, (name, answer)
    last = answers[-1]
    got = "reply" if last.status == 200 else last.slug
    assert got in EXPECTED_LAST[name], (name, got, last.body[:300])


@pytest.fixture
def driver(server_context) -> ServerDriver:
    return ServerDriver(server_context, SessionStore(SessionLimits()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case_in_memory(name, driver, pki):
    channel = MemoryChannel(driver)
    survivor, cookie = establish(MemoryChannel(driver, client="10.1.1.1"), pki)
    answers = CASES[name](channel, lambda version: client_config(pki, version))
    check_case(name, answers)
    roundtrip(MemoryChannel(driver, client="10.1.1.1"), survivor, cookie)
    fresh, fresh_cookie = establish(channel, pki)
    roundtrip(channel, fresh, fresh_cookie)
