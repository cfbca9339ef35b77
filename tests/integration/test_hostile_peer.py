"""The hostile ATLS peer (tests/hostile/peer.py) once through the running service.

Every case in sequence against one service: each answer a documented refusal
or a reply (problem documents for refusals), and a session established before
the attack still works after all of them; the service stays healthy.
"""

from __future__ import annotations

import json

import httpx
import pytest

from atls.http_binding import MEDIA_TYPE, SESSION_COOKIE, Mode
from tests.conftest import client_config
from tests.hostile.peer import CASES, Answer
from tests.hostile.test_hostile_peer import check_case
from tests.integration.conftest import atls_client, raw_http

pytestmark = pytest.mark.integration


class ServiceChannel:
    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http = http
        self.url = url + "/.well-known/atls"

    def post(self, body: bytes, cookie: str | None) -> Answer:
        self.http.cookies.clear()
        headers = {"content-type": MEDIA_TYPE}
        if cookie:
            headers["cookie"] = f"{SESSION_COOKIE}={cookie}"
        response = self.http.post(self.url, content=body, headers=headers)
        slug = None
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
            slug = json.loads(response.content)["type"].rsplit(":", 1)[1]
        return Answer(
            response.status_code, slug, response.content, response.cookies.get(SESSION_COOKIE)
        )


def test_every_hostile_case_through_the_service(pki, service):
    survivor = atls_client(pki, service.url, mode=Mode.RECORDS)
    survivor.handshake()
    with raw_http(pki) as http:
        channel = ServiceChannel(http, service.url)
        for name, case in CASES.items():
            check_case(name, case(channel, lambda version: client_config(pki, version)))
        assert http.get(service.url + "/healthz").json()["status"] == "ok"
    assert survivor.http.get("/api/hello").status_code == 200, "the established session broke"
    survivor.close()
