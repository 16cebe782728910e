"""Fixtures of the smartcard unit tests: a frozen clock, card authorities, an HTTP server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from authsvc.clock import FrozenClock

from .authority import CardAuthority, RevocationServer

ORIGIN = "http://127.0.0.1:5000"
NONCE = "q0Y6xVQ5m6Yd0Jc0Yb0r7b1n0m3Vh3s8r6qj0b6b1Zc="


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def pki_clock(now: dt.datetime) -> FrozenClock:
    return FrozenClock(now)


@pytest.fixture
def authority(now: dt.datetime) -> CardAuthority:
    return CardAuthority(now, label="Test")


@pytest.fixture
def other_authority(now: dt.datetime) -> CardAuthority:
    """Another authority with the same names but its own keys: not trusted."""
    return CardAuthority(now, label="Test", key_index=1)


@pytest.fixture
def server() -> Iterator[RevocationServer]:
    srv = RevocationServer().start()
    yield srv
    srv.stop()
