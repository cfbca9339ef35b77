"""ATLS core: a sans-I/O Application-Layer TLS session and its bindings."""

from .session import (
    ApplicationData,
    ATLSError,
    ATLSSession,
    CloseNotify,
    Event,
    HandshakeComplete,
    IncompleteFlightError,
    NotTLSError,
    Role,
    SessionInfo,
    SessionStateError,
    TLSAlertError,
    TLSConfig,
    TLSContext,
    TLSVersion,
)

__all__ = [
    "ATLSError",
    "ATLSSession",
    "ApplicationData",
    "CloseNotify",
    "Event",
    "HandshakeComplete",
    "IncompleteFlightError",
    "NotTLSError",
    "Role",
    "SessionInfo",
    "SessionStateError",
    "TLSAlertError",
    "TLSConfig",
    "TLSContext",
    "TLSVersion",
]
