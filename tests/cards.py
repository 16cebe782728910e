"""Fixtures for smartcard tests: a test CA with CRL and OCSP on loopback, and SoftHSM2 cards.

Registered by ``tests/conftest.py`` (``pytest_plugins``). One CA, token store and revocation server
per test session; each card is a new token with its own label and PINs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from softhsm.testca import Card, RevocationServer, SoftHSM, TestCA


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHSM:
    """A SoftHSM2 token store of the test session (its own softhsm2.conf)."""
    try:
        return SoftHSM(tmp_path_factory.mktemp("softhsm"))
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def revocation_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory, revocation_port: int) -> TestCA:
    """The test LuxTrust CA; its CRL Distribution Point and OCSP URL point at the session's server."""
    return TestCA.create(
        tmp_path_factory.mktemp("ca") / "ca", base_url=f"http://127.0.0.1:{revocation_port}"
    )


@pytest.fixture(scope="session")
def revocation_server(test_ca: TestCA, revocation_port: int) -> Iterator[RevocationServer]:
    """The CRL and the OCSP responder, served on 127.0.0.1 for the whole session."""
    with RevocationServer(test_ca, revocation_port) as server:
        yield server


@pytest.fixture
def make_card(softhsm: SoftHSM, test_ca: TestCA) -> Callable[..., Card]:
    """``make_card(key_type="rsa", client_auth=True, …)``: a new card on a new token."""

    def make(**options: Any) -> Card:
        options.setdefault("given_name", "Marie")
        options.setdefault("family_name", "Dupont")
        return test_ca.issue_card(softhsm, **options)

    return make


@pytest.fixture
def card(make_card: Callable[..., Card]) -> Card:
    """A good EC P-256 card, as LuxTrust issues them."""
    return make_card()


@pytest.fixture
def trust_anchors(test_ca: TestCA) -> Path:
    return test_ca.trust_anchors
