"""Driving the activation flows API as a browser (or a native app) would."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from authsvc import matricule
from authsvc.activation import letters
from authsvc.app import Services
from softhsm.testca import Card, SoftHSM

from ..card_signing import sign_challenge

HEADER = "matricule,given_name,family_name,profession,provider_code\n"
ANNE = matricule.make(date(1970, 5, 17), 1)
JEAN = matricule.make(date(1981, 2, 3), 42)
GOOD_PASSWORD = "zebra lantern quietly orbit"
#: the directory's names of each professional: a card must be issued in them to be bound
NAMES = {ANNE: ("Anne", "Muller"), JEAN: ("Jean", "Schmit")}


@dataclass
class Letter:
    matricule: str
    code: str
    letter_id: str


@pytest.fixture
def env(env: dict[str, str], test_ca, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AUTHSVC_CARD_TRUST_ANCHORS", str(test_ca.trust_anchors))
    return {**env, "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors)}


@pytest.fixture
def directory(services: Services, tmp_path: Path) -> None:
    from authsvc.directory.importer import import_directory

    data = (
        HEADER + f"{ANNE},Anne,Muller,doctor,123456-78\n{JEAN},Jean,Schmit,nurse,234567-89\n"
    ).encode()
    with services.db.transaction() as session:
        import_directory(session, data, actor="test", clock=services.clock)


@pytest.fixture
def card_for(make_card: Callable[..., Card]) -> Callable[..., Card]:
    """``card_for(ANNE)``: a new card issued in that professional's names (``make_card``'s
    options pass through)."""

    def make(number: str = ANNE, **options: Any) -> Card:
        given, family = NAMES[number]
        return make_card(**{"given_name": given, "family_name": family, **options})

    return make


@pytest.fixture
def issue_letter(services: Services, directory: None) -> Callable[[str], Letter]:
    def issue(number: str = ANNE) -> Letter:
        with services.db.transaction() as session:
            issued = letters.issue(
                session, number, hasher=services.hasher, actor="test", clock=services.clock
            )
        return Letter(number, issued.activation_code, issued.letter_id)

    return issue


@pytest.fixture
def letter(issue_letter: Callable[[str], Letter]) -> Letter:
    return issue_letter(ANNE)


class Activation:
    """One browser's activation: its own cookie jar (a Flask test client)."""

    def __init__(self, client: Any, services: Services, softhsm: SoftHSM | None = None) -> None:
        self.client = client
        self.services = services
        self.softhsm = softhsm
        self.flow: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"/api/activation/{self.flow['flow_id']}"

    def start(self, code: str, number: str, **extra: Any) -> Any:
        response = self.client.post(
            "/api/activation", json={"activation_code": code, "matricule": number, **extra}
        )
        if response.status_code == 201:
            self.flow = response.json
        return response

    def post(self, step: str, **body: Any) -> Any:
        body.setdefault("csrf_token", self.flow["csrf_token"])
        return self.client.post(f"{self.url}/{step}", json=body)

    def get(self) -> Any:
        return self.client.get(self.url)

    def mailed_code(self) -> str:
        self.services.outbox.deliver_due()
        files = sorted(
            self.services.settings.mail_dir.glob("*.eml"), key=lambda f: f.stat().st_mtime_ns
        )
        for file in reversed(files):
            mail = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
            if mail["To"] != self.flow.get("email", mail["To"]):
                continue
            text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            match = re.search(r"^Verification code: (\d{6})\r?$", text, re.MULTILINE)
            if match:
                return match.group(1)
        raise AssertionError("no verification mail was written")

    def to_password(self, letter: Letter, address: str = "anne.muller@example.lu") -> None:
        assert self.start(letter.code, letter.matricule).status_code == 201
        assert self.post("email", email=address).status_code == 200
        assert self.post("email/verify", code=self.mailed_code()).status_code == 200

    def to_smartcard(self, letter: Letter) -> dict[str, Any]:
        self.to_password(letter)
        response = self.post("password", password=GOOD_PASSWORD)
        assert response.status_code == 200, response.json
        return response.json["challenge"]  # type: ignore[no-any-return]

    def token(self, card: Card, challenge: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert self.softhsm is not None
        return sign_challenge(
            self.softhsm, card, nonce=challenge["nonce"], origin=challenge["origin"], **kw
        )


@pytest.fixture
def activation(app, services: Services, softhsm: SoftHSM) -> Callable[[], Activation]:  # type: ignore[no-untyped-def]
    def new() -> Activation:
        return Activation(app.test_client(), services, softhsm)

    return new
