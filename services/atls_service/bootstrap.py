"""Bootstrap (BRSKI-like) and operator APIs of the service.

Operator API (network, ``Authorization: Bearer <token>``):
  PUT  /operator/domains/{domain}          {"ca_certs": PEM}   register a domain's CA(s)
  POST /operator/domains/{domain}/claims   {"serials": [...]}  claim devices for it
  GET  /operator/domains/{domain}                              what is registered
  GET  /operator/events?since=N                                bootstrap events

Device API (only inside an ATLS session; the device is who its certificate says):
  POST /bootstrap/voucher            {"serial-number", "nonce"}  -> signed voucher (JWS)
  GET  /bootstrap/cacerts                                       -> EST certs-only PKCS#7
  POST /bootstrap/transport-report   {"target", "presented_chain": [PEM]}
       the certificate the middlebox presented (draft section 6.2); recorded and
       checked against the domain's registered CA
"""

from __future__ import annotations

import datetime
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atls.cacerts import CACERTS_MEDIA_TYPE, anchor_problem, encode_cacerts
from atls.errors import Reason, Refusal
from atls.pki import CERT_PARSE_ERRORS, Identity, device_serial
from atls.voucher import VOUCHER_MEDIA_TYPE, Voucher, VoucherError, check_nonce, sign_voucher

from .dispatch import atls_context
from .endpoint import refusal_response
from .limits import read_body
from .logs import log_event

MAX_JSON_BYTES = 65536
MAX_EVENTS = 10000


@dataclass
class Domain:
    name: str
    ca_certs: list[x509.Certificate]
    serials: set[str] = field(default_factory=set)


class Registry:
    """Domains, device claims and the bootstrap event log (in memory)."""

    def __init__(self) -> None:
        self.domains: dict[str, Domain] = {}
        self.claims: dict[str, str] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._next_event = 0

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"id": self._next_event, "time": time.time(), "event": event, **fields}
        self._next_event += 1
        self.events.append(entry)
        log_event(f"bootstrap.{event}", **fields)
        return entry

    def domain_of(self, serial: str) -> Domain | None:
        name = self.claims.get(serial)
        return self.domains.get(name) if name else None


def _refused(reason: Reason, title: str, detail: str) -> Refusal:
    return Refusal(reason, detail, title=title)


async def _json_body(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _refused(Reason.INVALID_JSON, "body is not JSON", "send a JSON object") from None
    if not isinstance(data, dict):
        raise _refused(Reason.INVALID_JSON, "body is not a JSON object", "send a JSON object")
    return data


class BootstrapAPI:
    def __init__(
        self,
        registry: Registry,
        voucher_signer: Identity | None,
        operator_token: str | None,
        voucher_lifetime: datetime.timedelta = datetime.timedelta(minutes=10),
    ) -> None:
        self.registry = registry
        self.signer = voucher_signer
        self.token = operator_token
        self.lifetime = voucher_lifetime

    def routes(self) -> list[Route]:
        def wrap(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                try:
                    result: Response = await handler(request)
                    return result
                except Refusal as refusal:
                    return refusal_response(refusal)

            return endpoint

        return [
            Route("/operator/domains/{domain}", wrap(self.put_domain), methods=["PUT"]),
            Route("/operator/domains/{domain}", wrap(self.get_domain), methods=["GET"]),
            Route("/operator/domains/{domain}/claims", wrap(self.claim), methods=["POST"]),
            Route("/operator/events", wrap(self.events), methods=["GET"]),
            Route("/bootstrap/voucher", wrap(self.voucher), methods=["POST"]),
            Route("/bootstrap/cacerts", wrap(self.cacerts), methods=["GET"]),
            Route("/bootstrap/transport-report", wrap(self.transport_report), methods=["POST"]),
        ]

    # -- operator ---------------------------------------------------------------------

    def _operator(self, request: Request) -> None:
        if self.token is None:
            raise _refused(
                Reason.OPERATOR_API_DISABLED,
                "operator API disabled",
                "the service was started without an operator token",
            )
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        ):
            raise _refused(
                Reason.OPERATOR_UNAUTHORIZED,
                "operator token required",
                "send Authorization: Bearer <operator token>",
            )

    async def put_domain(self, request: Request) -> Response:
        self._operator(request)
        name = request.path_params["domain"]
        data = await _json_body(request)
        pem = data.get("ca_certs")
        if not isinstance(pem, str):
            raise _refused(
                Reason.INVALID_DOMAIN,
                "ca_certs missing",
                "ca_certs must be the domain CA certificate(s) as PEM text",
            )
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except CERT_PARSE_ERRORS as exc:
            raise _refused(Reason.INVALID_DOMAIN, "ca_certs do not parse", str(exc)) from None
        for cert in certs:
            problem = anchor_problem(cert)
            if problem:
                raise _refused(Reason.INVALID_DOMAIN, "not a domain CA", problem)
        existing = self.registry.domains.get(name)
        domain = Domain(name, certs, existing.serials if existing else set())
        self.registry.domains[name] = domain
        self.registry.record(
            "domain-registered", domain=name, ca=[c.subject.rfc4514_string() for c in certs]
        )
        return JSONResponse(self._domain_json(domain), 201 if existing is None else 200)

    async def get_domain(self, request: Request) -> Response:
        self._operator(request)
        domain = self.registry.domains.get(request.path_params["domain"])
        if domain is None:
            raise _refused(Reason.UNKNOWN_DOMAIN, "no such domain", "register it first")
        return JSONResponse(self._domain_json(domain))

    async def claim(self, request: Request) -> Response:
        self._operator(request)
        name = request.path_params["domain"]
        domain = self.registry.domains.get(name)
        if domain is None:
            raise _refused(
                Reason.UNKNOWN_DOMAIN,
                "no such domain",
                f"register domain {name!r} before claiming devices",
            )
        serials = (await _json_body(request)).get("serials")
        if not isinstance(serials, list) or not all(isinstance(s, str) and s for s in serials):
            raise _refused(
                Reason.INVALID_CLAIM,
                "serials missing",
                "serials must be a list of device serial numbers",
            )
        taken = sorted(s for s in serials if self.registry.claims.get(s, name) != name)
        if taken:
            raise _refused(
                Reason.SERIAL_CLAIMED,
                "serial claimed by another domain",
                f"{', '.join(taken[:5])} already belong to another domain",
            )
        for serial in serials:
            self.registry.claims[serial] = name
            domain.serials.add(serial)
        self.registry.record("devices-claimed", domain=name, count=len(serials))
        return JSONResponse(self._domain_json(domain))

    async def events(self, request: Request) -> Response:
        self._operator(request)
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            raise _refused(Reason.INVALID_QUERY, "since is not a number", "since=N") from None
        return JSONResponse({"events": [e for e in self.registry.events if e["id"] >= since]})

    @staticmethod
    def _domain_json(domain: Domain) -> dict[str, Any]:
        return {
            "domain": domain.name,
            "ca": [c.subject.rfc4514_string() for c in domain.ca_certs],
            "devices": sorted(domain.serials),
        }

    # -- device -------------------------------------------------------------------------

    def _device(self, request: Request) -> str:
        """The serial of the device on the other end of this ATLS session."""
        ctx = atls_context(request)
        if ctx is None:
            raise _refused(
                Reason.ATLS_REQUIRED,
                "ATLS required",
                "bootstrap requests are served only inside an ATLS session",
            )
        cert = ctx.info.peer_certificate
        serial = device_serial(cert) if cert else None
        if serial is None:
            raise _refused(
                Reason.NO_DEVICE_IDENTITY,
                "no device identity",
                "the ATLS session carries no device certificate with a serial number",
            )
        return serial

    def _claimed(self, serial: str) -> Domain:
        domain = self.registry.domain_of(serial)
        if domain is None:
            self.registry.record("voucher-refused", serial=serial, reason="not claimed")
            raise _refused(
                Reason.SERIAL_NOT_CLAIMED,
                "device not claimed",
                f"serial {serial} is not claimed by any domain",
            )
        return domain

    async def voucher(self, request: Request) -> Response:
        serial = self._device(request)
        data = await _json_body(request)
        asked = data.get("serial-number")
        if asked != serial:
            self.registry.record(
                "voucher-refused", serial=serial, reason="serial mismatch", asked=str(asked)
            )
            raise _refused(
                Reason.SERIAL_MISMATCH,
                "serial does not match the device",
                f"the request names {asked!r} but the device certificate says {serial!r}",
            )
        nonce = data.get("nonce")
        if not isinstance(nonce, str):
            raise _refused(Reason.INVALID_NONCE, "bad nonce", "nonce must be base64 text")
        try:
            check_nonce(nonce)
        except VoucherError as exc:
            raise _refused(Reason.INVALID_NONCE, "bad nonce", str(exc)) from None
        domain = self._claimed(serial)
        if self.signer is None:
            raise _refused(
                Reason.NO_VOUCHER_SIGNER,
                "cannot sign vouchers",
                "the service has no voucher signer configured",
            )
        now = datetime.datetime.now(datetime.UTC)
        voucher = Voucher("logged", serial, nonce, now, now + self.lifetime, domain.ca_certs[0])
        signed = sign_voucher(voucher, self.signer)
        self.registry.record("voucher-issued", serial=serial, domain=domain.name)
        return Response(json.dumps(signed), media_type=VOUCHER_MEDIA_TYPE)

    async def cacerts(self, request: Request) -> Response:
        serial = self._device(request)
        domain = self._claimed(serial)
        self.registry.record(
            "cacerts-served", serial=serial, domain=domain.name, count=len(domain.ca_certs)
        )
        return Response(encode_cacerts(domain.ca_certs), media_type=CACERTS_MEDIA_TYPE)

    async def transport_report(self, request: Request) -> Response:
        serial = self._device(request)
        data = await _json_body(request)
        chain_pem = data.get("presented_chain")
        if (
            not isinstance(chain_pem, list)
            or not chain_pem
            or not all(isinstance(c, str) for c in chain_pem)
        ):
            raise _refused(
                Reason.INVALID_REPORT,
                "presented_chain missing",
                "presented_chain must be a list of PEM certificates, leaf first",
            )
        try:
            chain = [x509.load_pem_x509_certificate(c.encode()) for c in chain_pem]
            presented, issuer = chain[0].subject.rfc4514_string(), chain[0].issuer.rfc4514_string()
        except CERT_PARSE_ERRORS as exc:  # fields parse lazily: a name may fail here
            raise _refused(Reason.INVALID_REPORT, "certificate does not parse", str(exc)) from None
        domain = self.registry.domain_of(serial)
        matches = bool(domain) and _issued_by_any(chain, domain.ca_certs if domain else [])
        self.registry.record(
            "transport-report",
            serial=serial,
            domain=domain.name if domain else None,
            target=str(data.get("target", "")),
            presented=presented,
            issuer=issuer,
            matches_domain_ca=matches,
        )
        return JSONResponse(
            {
                "recorded": True,
                "matches_domain_ca": matches,
                "domain": domain.name if domain else None,
            }
        )


def _issued_by_any(chain: list[x509.Certificate], cas: list[x509.Certificate]) -> bool:
    """Whether some certificate of the presented chain was issued by a registered CA."""
    for cert in chain:
        for ca in cas:
            if cert == ca:
                return True
            try:
                cert.verify_directly_issued_by(ca)
                return True
            except InvalidSignature:
                continue
            except CERT_PARSE_ERRORS:
                continue
    return False
