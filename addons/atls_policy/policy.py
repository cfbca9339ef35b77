"""The policy file: ordered rules over what the middlebox can see.

```yaml
version: 1
default: allow                 # or {action: block, status: 403, detail: "..."}
rules:
  - id: no-legacy              # unique, shows up in audit lines and problem bodies
    match:                     # every field optional; a list means "any of"
      client: 10.0.0.0/8       # IP or network of the device
      host: "*.example.com"    # destination host (glob)
      port: 443
      path: /atls              # request path (glob)
      variant: draft-00        # current | draft-00 | unlabelled (labelled, legacy: old names)
      tls_versions: ["1.2"]    # the session's ClientHello offers any of these
      sni: atls-service        # glob
      cipher_suites: ["*CHACHA20*"]   # offered by the ClientHello (IANA names, globs)
      groups: [secp256r1]      # supported_groups offered; key_shares: the shares sent
      alpn: [coap]             # ALPN protocols offered
      extensions: [early_data] # extensions present in the ClientHello (IANA names)
      client_cert_subject: "*O=ACME*"   # TLS 1.2 only: the device certificate's subject
      client_cert_serial: "device-00*"  # TLS 1.2 only: its serial number (X.520)
      direction: request       # request | response
      flight: 1                # the session's n-th flight (1-based)
      transport: coap          # http (the HTTP middlebox) | coap (the UDP middlebox)
    action: block              # allow | block | audit | limit | fault | mark
    status: 403
```

``allow``, ``block`` and ``fault`` decide and stop; ``audit`` and ``mark``
apply and go on; ``limit`` goes on unless a limit is exceeded, then blocks
(429). When no deciding rule matches, ``default`` decides. ``Policy.decide``
runs that loop; it needs no mitmproxy, so it is tested on its own.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from atls.config import TLSVersion

from .observe import EXTENSIONS, GROUPS, SUITES


class PolicyError(ValueError):
    """The policy file is invalid; the message names the place and the problem."""


class Action(enum.Enum):
    ALLOW = "allow"
    BLOCK = "block"
    AUDIT = "audit"
    LIMIT = "limit"
    FAULT = "fault"
    MARK = "mark"


# The draft variants as the whole project names them (atls.http_binding.Variant),
# plus what only an observer sees: TLS records under another content type.
VARIANTS = ("current", "draft-00", "unlabelled")
VARIANT_ALIASES = {"labelled": "current", "legacy": "draft-00"}  # names before 0.2
DIRECTIONS = ("request", "response")
TRANSPORTS = ("http", "coap")  # which middlebox saw the flight: HTTP, or CoAP datagrams
# What a flight's body is: TLS records, not TLS records at all, or a protected
# (aes128gcm) export-mode message, which is opaque by design.
RECORD_STATES = ("valid", "invalid", "protected")
FAULT_TYPES = (
    "bitflip",
    "truncate",
    "drop",
    "delay",
    "duplicate",
    "replay",
    "content-type",
    # attacks a middlebox can mount on opaque ATLS bytes (issue #12)
    "strip-versions",  # remove supported_versions from a ClientHello (downgrade)
    "reorder",  # the flight's records in reverse order
    "swap-cookie",  # send the request under another session's cookie
)


@dataclass(frozen=True)
class FlightContext:
    """What a rule can match on for one flight."""

    client: str
    host: str
    port: int
    path: str
    variant: str
    direction: str
    flight: int
    offered_versions: frozenset[str] = frozenset()
    sni: str | None = None
    cipher_suites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    key_shares: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    client_cert_subjects: tuple[str, ...] = ()  # seen only in TLS 1.2
    client_cert_serials: tuple[str, ...] = ()
    body_bytes: int = 0
    session_bytes: int = 0  # the session's bytes before this flight
    transport: str = "http"
    records: str = "valid"  # one of RECORD_STATES


@dataclass(frozen=True)
class Match:
    clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    paths: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    tls_versions: tuple[str, ...] = ()
    snis: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    flights: tuple[int, ...] = ()
    cipher_suites: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    key_shares: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    client_cert_subjects: tuple[str, ...] = ()
    client_cert_serials: tuple[str, ...] = ()

    def _offered(self) -> tuple[tuple[tuple[str, ...], str], ...]:
        """The conditions on sets the ClientHello (or a TLS 1.2 certificate) offers."""
        return (
            (self.cipher_suites, "cipher_suites"),
            (self.groups, "groups"),
            (self.key_shares, "key_shares"),
            (self.alpn, "alpn"),
            (self.extensions, "extensions"),
            (self.client_cert_subjects, "client_cert_subjects"),
            (self.client_cert_serials, "client_cert_serials"),
        )

    transports: tuple[str, ...] = ()
    records: tuple[str, ...] = ()

    def matches(self, ctx: FlightContext) -> bool:
        if self.records and ctx.records not in self.records:
            return False
        if self.clients:
            try:
                address = ipaddress.ip_address(ctx.client)
            except ValueError:
                return False
            if not any(address in net for net in self.clients):
                return False
        if self.hosts and not _glob_any(ctx.host, self.hosts):
            return False
        if self.ports and ctx.port not in self.ports:
            return False
        if self.paths and not any(fnmatch.fnmatchcase(ctx.path, p) for p in self.paths):
            return False
        if self.variants and ctx.variant not in self.variants:
            return False
        if self.tls_versions and not ctx.offered_versions & set(self.tls_versions):
            return False
        if self.snis and (ctx.sni is None or not _glob_any(ctx.sni, self.snis)):
            return False
        if self.directions and ctx.direction not in self.directions:
            return False
        if self.flights and ctx.flight not in self.flights:
            return False
        if self.transports and ctx.transport not in self.transports:
            return False
        for patterns, name in self._offered():
            if patterns and not any(_glob_any(v, patterns) for v in getattr(ctx, name)):
                return False
        return True


def _named(table: dict[int, str]) -> Callable[[Any], str | None]:
    """A converter for IANA names: a known name, a code (0x1301) or a glob pattern.

    Codes become the name the observer reports for them (its hex when unnamed).
    """
    names = {name.lower(): name for name in table.values()}

    def convert(value: Any) -> str | None:
        if isinstance(value, str) and value.lower().startswith("0x"):
            try:
                value = int(value, 16)
            except ValueError:
                return None
        if isinstance(value, int) and not isinstance(value, bool):
            return table.get(value, f"0x{value:04x}") if 0 <= value <= 0xFFFF else None
        if not isinstance(value, str) or not value:
            return None
        if value.lower() in names:
            return names[value.lower()]
        return value if any(c in value for c in "*?[") else None

    return convert


def _glob_any(value: str, patterns: tuple[str, ...]) -> bool:
    value = value.lower()
    return any(fnmatch.fnmatchcase(value, p.lower()) for p in patterns)


@dataclass(frozen=True)
class Limits:
    flights_per_session: int | None = None
    bytes_per_session: int | None = None
    flights_per_second_per_client: float | None = None


@dataclass(frozen=True)
class Fault:
    type: str
    offset: int | None = None
    seed: int | None = None
    bit: int | None = None
    keep: int | None = None
    seconds: float = 0.0
    replay_flight: int | None = None
    content_type: str | None = None
    max_times: int | None = None
    keep_records: int | None = None  # truncate at a record boundary
    other_session: bool = False  # replay: a flight of another session
    wait: float = 5.0  # swap-cookie, replay from another session: wait for one to appear


@dataclass(frozen=True)
class Rule:
    id: str
    action: Action
    match: Match = field(default_factory=Match)
    status: int = 403
    detail: str | None = None
    limits: Limits | None = None
    fault: Fault | None = None
    mark: str = ":warning:"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    default: Rule
    source: str = "<built-in>"

    @classmethod
    def allow_all(cls) -> Policy:
        return cls((), Rule("default", Action.ALLOW))

    @classmethod
    def refuse_all(cls, why: str) -> Policy:
        """What a middlebox whose policy file is invalid applies: nothing passes (fail closed)."""
        detail = f"ATLS policy invalid: {why}"
        rule = Rule("invalid-policy", Action.BLOCK, status=503, detail=detail)
        return cls((), rule, "<invalid>")

    def decide(self, ctx: FlightContext, state: PolicyState) -> Decision:
        """Run the rules over one flight, first deciding rule wins."""
        audit: list[str] = []
        mark: str | None = None
        for rule in self.rules:
            if not rule.match.matches(ctx):
                continue
            if rule.action is Action.AUDIT:
                audit.append(rule.id)
            elif rule.action is Action.MARK:
                mark = rule.mark
            elif rule.action is Action.LIMIT:
                exceeded = state.exceeded(rule, ctx)
                if exceeded:
                    return Decision(
                        Action.BLOCK, rule.id, rule.status, exceeded, True, audit=audit, mark=mark
                    )
            elif rule.action is Action.FAULT:
                assert rule.fault is not None
                uses = state.fault_uses[rule.id]
                if rule.fault.max_times and uses >= rule.fault.max_times:
                    continue
                state.fault_uses[rule.id] = uses + 1
                return Decision(
                    Action.FAULT,
                    rule.id,
                    fault=rule.fault,
                    fault_use=uses + 1,
                    audit=audit,
                    mark=mark,
                )
            else:
                return Decision(
                    rule.action, rule.id, rule.status, rule.detail, audit=audit, mark=mark
                )
        default = self.default
        return Decision(
            default.action, default.id, default.status, default.detail, audit=audit, mark=mark
        )


@dataclass
class Decision:
    """What the policy decided for one flight; ``to_dict`` travels in ``flow.metadata``."""

    action: Action
    rule: str
    status: int = 403
    detail: str | None = None
    limit_exceeded: bool = False
    fault: Fault | None = None
    fault_use: int = 0
    audit: list[str] = field(default_factory=list)
    mark: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict's deep copy showed in the addon's profile
        return {
            "action": self.action.value,
            "rule": self.rule,
            "status": self.status,
            "detail": self.detail,
            "limit_exceeded": self.limit_exceeded,
            "fault": asdict(self.fault) if self.fault is not None else None,
            "fault_use": self.fault_use,
            "audit": list(self.audit),
            "mark": self.mark,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        fault = data.get("fault")
        return cls(
            **{
                **data,
                "action": Action(data["action"]),
                "fault": Fault(**fault) if fault else None,
            }
        )


class PolicyState:
    """What the rules remember between flights: fault uses and per-client flight times."""

    def __init__(self, max_clients: int = 10000) -> None:
        self.fault_uses: Counter[str] = Counter()
        self._client_times: dict[str, deque[float]] = {}
        self._max_clients = max_clients

    def reset(self) -> None:
        """A new policy: fault budgets start again."""
        self.fault_uses.clear()

    def exceeded(self, rule: Rule, ctx: FlightContext, now: float | None = None) -> str | None:
        """Why this flight breaks the rule's limits, or None."""
        limits = rule.limits
        assert limits is not None
        if (
            limits.flights_per_session
            and ctx.direction == "request"
            and ctx.flight > limits.flights_per_session
        ):
            return f"session exceeded {limits.flights_per_session} flights"
        if (
            limits.bytes_per_session
            and ctx.session_bytes + ctx.body_bytes > limits.bytes_per_session
        ):
            return f"session exceeded {limits.bytes_per_session} bytes"
        if limits.flights_per_second_per_client and ctx.direction == "request":
            now = time.monotonic() if now is None else now
            times = self._client_times.setdefault(ctx.client, deque())
            while times and now - times[0] > 1.0:
                times.popleft()
            if len(times) >= limits.flights_per_second_per_client:
                return (
                    f"client {ctx.client} exceeded "
                    f"{limits.flights_per_second_per_client:g} flights per second"
                )
            times.append(now)
            if len(self._client_times) > self._max_clients:
                self._client_times.pop(next(iter(self._client_times)))
        return None


# ---------------------------------------------------------------------------
# Loading and validation


MAX_POLICY_BYTES = 1 << 20
MAX_POLICY_DEPTH = 32


def load_policy(path: Path | str) -> Policy:
    """Read and parse a policy file; every failure is a ``PolicyError`` naming the place."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{path}: policy file larger than {MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(
            f"{path}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    return parse_policy(text, str(path))


def _depth_checked(node: yaml.Node, source: str) -> None:
    """Refuse nesting deeper than any policy needs (the parser would recurse on it)."""
    stack: list[tuple[yaml.Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_POLICY_DEPTH:
            mark = current.start_mark
            raise PolicyError(
                f"{source}: line {mark.line + 1} column {mark.column + 1}: nested deeper "
                f"than {MAX_POLICY_DEPTH} levels"
            )
        if isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def parse_policy(text: str, source: str = "<string>") -> Policy:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _depth_checked(node, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise PolicyError(
            f"{source}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}"
        ) from None
    except RecursionError:
        raise PolicyError(f"{source}: nested too deeply to parse") from None
    return _Parser(source).policy(data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> PolicyError:
        return PolicyError(f"{self.source}: {where}: {message}")

    def policy(self, data: Any) -> Policy:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.fail("top level", "a policy is a mapping with 'rules' and 'default'")
        self._keys("top level", data, {"version", "rules", "default"})
        if data.get("version", 1) != 1:
            raise self.fail("version", f"unsupported version {data['version']!r} (only 1)")
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise self.fail("rules", "must be a list of rules")
        rules = tuple(self.rule(f"rules[{i}]", r) for i, r in enumerate(raw_rules))
        seen: set[str] = set()
        for i, rule in enumerate(rules):
            if rule.id in seen:
                raise self.fail(f"rules[{i}].id", f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        default = self.default(data.get("default", "allow"))
        return Policy(rules, default, self.source)

    def default(self, raw: Any) -> Rule:
        if isinstance(raw, str):
            raw = {"action": raw}
        if not isinstance(raw, dict):
            raise self.fail("default", "must be 'allow', 'block' or a mapping with 'action'")
        self._keys("default", raw, {"action", "status", "detail"})
        rule = self.rule("default", {"id": "default", **raw})
        if rule.action not in (Action.ALLOW, Action.BLOCK):
            raise self.fail("default.action", "the default is 'allow' or 'block'")
        return rule

    def rule(self, where: str, raw: Any) -> Rule:
        if not isinstance(raw, dict):
            raise self.fail(where, "a rule is a mapping with 'id' and 'action'")
        self._keys(
            where, raw, {"id", "match", "action", "status", "detail", "limits", "fault", "mark"}
        )
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not rule_id.strip():
            raise self.fail(f"{where}.id", "every rule needs a non-empty string id")
        action_text = raw.get("action")
        try:
            action = Action(action_text)
        except ValueError:
            choices = ", ".join(a.value for a in Action)
            raise self.fail(
                f"{where}.action", f"{action_text!r} is not one of: {choices}"
            ) from None
        status = raw.get("status", 429 if action is Action.LIMIT else 403)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise self.fail(f"{where}.status", f"{status!r} is not an HTTP error status (400-599)")
        detail = raw.get("detail")
        if detail is not None and not isinstance(detail, str):
            raise self.fail(f"{where}.detail", "must be a string")
        mark = raw.get("mark", ":warning:")
        if not isinstance(mark, str):
            raise self.fail(f"{where}.mark", "must be a string such as ':warning:'")
        limits = (
            self.limits(f"{where}.limits", raw.get("limits")) if action is Action.LIMIT else None
        )
        if action is not Action.LIMIT and "limits" in raw:
            raise self.fail(f"{where}.limits", "only a 'limit' rule takes limits")
        fault = self.fault(f"{where}.fault", raw.get("fault")) if action is Action.FAULT else None
        if action is not Action.FAULT and "fault" in raw:
            raise self.fail(f"{where}.fault", "only a 'fault' rule takes a fault")
        return Rule(
            rule_id,
            action,
            self.match(f"{where}.match", raw.get("match", {})),
            status,
            detail,
            limits,
            fault,
            mark,
        )

    def match(self, where: str, raw: Any) -> Match:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a mapping of conditions")
        self._keys(
            where,
            raw,
            {
                "client",
                "host",
                "port",
                "path",
                "variant",
                "tls_versions",
                "sni",
                "direction",
                "flight",
                "cipher_suites",
                "groups",
                "key_shares",
                "alpn",
                "extensions",
                "client_cert_subject",
                "client_cert_serial",
                "transport",
                "records",
            },
        )

        def networks(value: Any) -> Any:
            return ipaddress.ip_network(str(value), strict=False)

        return Match(
            clients=self._list(
                f"{where}.client", raw.get("client"), networks, "is not an IP address or network"
            ),
            hosts=self._list(f"{where}.host", raw.get("host"), self._string, "is not a string"),
            ports=self._list(f"{where}.port", raw.get("port"), self._port, "is not a port"),
            paths=self._list(f"{where}.path", raw.get("path"), self._path, "is not a path"),
            variants=self._list(
                f"{where}.variant",
                raw.get("variant"),
                self._variant,
                f"is not one of {', '.join(VARIANTS)}",
            ),
            tls_versions=self._list(
                f"{where}.tls_versions",
                raw.get("tls_versions"),
                self._tls_version,
                "is not a TLS version (1.0 to 1.3)",
            ),
            snis=self._list(f"{where}.sni", raw.get("sni"), self._string, "is not a string"),
            directions=self._list(
                f"{where}.direction",
                raw.get("direction"),
                self._choice(DIRECTIONS),
                "is not 'request' or 'response'",
            ),
            flights=self._list(
                f"{where}.flight",
                raw.get("flight"),
                self._positive,
                "is not a flight number (1, 2, ...)",
            ),
            cipher_suites=self._list(
                f"{where}.cipher_suites",
                raw.get("cipher_suites"),
                _named(SUITES),
                "is not a TLS cipher suite (an IANA name such as TLS_AES_128_GCM_SHA256, "
                "0x1301, or a pattern such as '*CHACHA20*')",
            ),
            groups=self._list(
                f"{where}.groups",
                raw.get("groups"),
                _named(GROUPS),
                "is not a named group (secp256r1, x25519, X25519MLKEM768, 0x0017, or a pattern)",
            ),
            key_shares=self._list(
                f"{where}.key_shares",
                raw.get("key_shares"),
                _named(GROUPS),
                "is not a named group (secp256r1, x25519, X25519MLKEM768, 0x0017, or a pattern)",
            ),
            alpn=self._list(f"{where}.alpn", raw.get("alpn"), self._string, "is not a string"),
            extensions=self._list(
                f"{where}.extensions",
                raw.get("extensions"),
                _named(EXTENSIONS),
                "is not a TLS extension (an IANA name such as key_share, 0x002b, or a pattern)",
            ),
            client_cert_subjects=self._list(
                f"{where}.client_cert_subject",
                raw.get("client_cert_subject"),
                self._string,
                "is not a string",
            ),
            client_cert_serials=self._list(
                f"{where}.client_cert_serial",
                raw.get("client_cert_serial"),
                self._string,
                "is not a string",
            ),
            transports=self._list(
                f"{where}.transport",
                raw.get("transport"),
                self._choice(TRANSPORTS),
                "is not 'http' or 'coap'",
            ),
            records=self._list(
                f"{where}.records",
                raw.get("records"),
                self._choice(RECORD_STATES),
                f"is not one of {', '.join(RECORD_STATES)}",
            ),
        )

    def limits(self, where: str, raw: Any) -> Limits:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(
                where,
                "a limit rule needs limits: flights_per_session, "
                "bytes_per_session and/or flights_per_second_per_client",
            )
        self._keys(
            where,
            raw,
            {"flights_per_session", "bytes_per_session", "flights_per_second_per_client"},
        )
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise self.fail(f"{where}.{key}", f"{value!r} is not a positive number")
            if key != "flights_per_second_per_client" and not isinstance(value, int):
                raise self.fail(f"{where}.{key}", f"{value!r} is not a whole number")
            values[key] = value
        return Limits(**values)

    def fault(self, where: str, raw: Any) -> Fault:
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict) or "type" not in raw:
            raise self.fail(
                where, f"a fault rule needs fault.type: one of {', '.join(FAULT_TYPES)}"
            )
        kind = raw["type"]
        if kind not in FAULT_TYPES:
            raise self.fail(f"{where}.type", f"{kind!r} is not one of {', '.join(FAULT_TYPES)}")
        allowed = {
            "bitflip": {"offset", "seed", "bit"},
            "truncate": {"keep", "records"},
            "drop": set(),
            "delay": {"seconds"},
            "duplicate": set(),
            "replay": {"flight", "session", "wait"},
            "content-type": {"set", "strip"},
            "strip-versions": set(),
            "reorder": set(),
            "swap-cookie": {"wait"},
        }[kind] | {"type", "max_times"}
        self._keys(where, raw, allowed)
        values: dict[str, Any] = {"type": kind}
        for key in ("offset", "seed", "keep", "max_times", "bit", "records"):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise self.fail(f"{where}.{key}", f"{value!r} is not a whole number")
                values["keep_records" if key == "records" else key] = value
        if "bit" in values and not 0 <= values["bit"] <= 7:
            raise self.fail(f"{where}.bit", "a bit is 0 to 7")
        if "max_times" in values and values["max_times"] < 1:
            raise self.fail(f"{where}.max_times", "must be at least 1")
        if kind == "bitflip" and "offset" in values and "seed" in values:
            raise self.fail(where, "give a bitflip either an offset or a seed, not both")
        if kind == "delay":
            seconds = raw.get("seconds")
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 < seconds <= 300
            ):
                raise self.fail(f"{where}.seconds", f"{seconds!r} is not a delay (0 < s <= 300)")
            values["seconds"] = float(seconds)
        if "keep" in values and "keep_records" in values:
            raise self.fail(where, "truncate either to 'keep' bytes or to 'records', not both")
        if kind == "replay" and "session" in raw:
            if raw["session"] not in ("same", "other"):
                raise self.fail(f"{where}.session", f"{raw['session']!r} is not 'same' or 'other'")
            values["other_session"] = raw["session"] == "other"
            if values["other_session"] and "flight" in raw:
                raise self.fail(where, "a replay from another session takes no 'flight'")
        if kind == "replay" and "wait" in raw and not values.get("other_session"):
            raise self.fail(f"{where}.wait", "only a replay from another session waits")
        if kind in ("swap-cookie", "replay") and "wait" in raw:
            wait = raw["wait"]
            if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 30:
                raise self.fail(f"{where}.wait", f"{wait!r} is not a wait (0 <= s <= 30)")
            values["wait"] = float(wait)
        if kind == "replay" and "flight" in raw:
            values["replay_flight"] = self._positive(raw["flight"])
            if values["replay_flight"] is None:
                raise self.fail(f"{where}.flight", f"{raw['flight']!r} is not a flight number")
        if kind == "content-type":
            if bool(raw.get("strip")) == ("set" in raw):
                raise self.fail(
                    where, "a content-type fault takes either 'set: TYPE' or 'strip: true'"
                )
            if "set" in raw:
                if not isinstance(raw["set"], str) or not raw["set"]:
                    raise self.fail(f"{where}.set", "must be a media type string")
                values["content_type"] = raw["set"]
        return Fault(**values)

    # -- helpers ------------------------------------------------------------

    def _keys(self, where: str, raw: dict[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(map(str, raw)) - allowed)
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )

    def _list(self, where: str, raw: Any, convert: Callable[[Any], Any], what: str) -> tuple:
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise self.fail(where, "an empty list never matches; remove the condition instead")
        out = []
        for i, item in enumerate(items):
            place = f"{where}[{i}]" if isinstance(raw, list) else where
            try:
                value = convert(item)
            except (ValueError, TypeError):
                value = None
            if value is None:
                raise self.fail(place, f"{item!r} {what}")
            out.append(value)
        return tuple(out)

    @staticmethod
    def _string(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    @staticmethod
    def _path(value: Any) -> str | None:
        return value if isinstance(value, str) and value.startswith("/") else None

    @staticmethod
    def _port(value: Any) -> int | None:
        return (
            value
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
            else None
        )

    @staticmethod
    def _positive(value: Any) -> int | None:
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
        )

    @staticmethod
    def _tls_version(value: Any) -> str | None:
        version = TLSVersion.parse(value)  # ValueError: reported with the place
        return version.label  # "1.2", "1.3", "DTLS 1.2": as observe names offered versions

    @staticmethod
    def _variant(value: Any) -> str | None:
        value = VARIANT_ALIASES.get(value, value)
        return value if value in VARIANTS else None

    @staticmethod
    def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
        return lambda value: value if value in options else None
