"""The provider under test: an active professional with a password and a bound card, registered
relying services, and a browser (Flask's test client) that signs in as a person would."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.app import Services
from authsvc.cards.models import Card as BoundCard
from authsvc.cards.models import CardStatus
from authsvc.directory.importer import import_directory
from authsvc.oidc.clients import Registration, register
from softhsm.testca import Card, SoftHSM

from ..card_signing import sign_challenge

ANNE = matricule.make(date(1970, 5, 17), 1)
JEAN = matricule.make(date(1981, 2, 3), 42)
PASSWORD = "zebra lantern quietly orbit"
RP = "https://rp.example.test"


@pytest.fixture
def env(env: dict[str, str], test_ca, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AUTHSVC_CARD_TRUST_ANCHORS", str(test_ca.trust_anchors))
    return {**env, "AUTHSVC_CARD_TRUST_ANCHORS": str(test_ca.trust_anchors)}


@dataclass
class Person:
    matricule: str
    account_id: uuid.UUID
    subject: str
    card: Card


def activate(services: Services, number: str, card: Card, *, password: str = PASSWORD) -> Person:
    """An account as activation leaves it: active, email verified, password, card bound."""
    with services.db.transaction() as db:
        letters.issue(db, number, hasher=services.hasher, actor="test", clock=services.clock)
        account = db.query(Account).join(Account.professional).filter_by(matricule=number).one()
        now = services.clock.now()
        account.status = AccountStatus.ACTIVE
        account.email = f"professional.{number[8:11]}@example.lu"
        account.email_verified_at = now
        account.password_hash = services.passwords.hash(password)
        account.activated_at = now
        cert = card.certificate
        db.add(
            BoundCard(
                account_id=account.id,
                issuer=cert.issuer.rfc4514_string(),
                serial=format(cert.serial_number, "x"),
                subject=cert.subject.rfc4514_string(),
                fingerprint=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
                certificate=cert.public_bytes(Encoding.DER),
                not_after=cert.not_valid_after_utc,
                status=CardStatus.ACTIVE,
                bound_at=now,
            )
        )
        return Person(number, account.id, account.subject, card)


@pytest.fixture
def directory(services: Services) -> None:
    data = (
        "matricule,given_name,family_name,profession,provider_code\n"
        f"{ANNE},Anne,Muller,doctor,123456-78\n{JEAN},Jean,Schmit,nurse,234567-89\n"
    ).encode()
    with services.db.transaction() as db:
        import_directory(db, data, actor="test", clock=services.clock)


@pytest.fixture
def anne(services: Services, directory: None, make_card: Callable[..., Card]) -> Person:
    return activate(services, ANNE, make_card(given_name="Anne", family_name="Muller"))


@pytest.fixture
def jean(services: Services, directory: None, make_card: Callable[..., Card]) -> Person:
    return activate(services, JEAN, make_card(given_name="Jean", family_name="Schmit"))


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str | None
    redirect_uri: str


@pytest.fixture
def new_client(services: Services) -> Callable[..., RegisteredClient]:
    def make(**options: Any) -> RegisteredClient:
        options.setdefault("name", "Shared care record")
        options.setdefault("redirect_uris", [f"{RP}/callback"])
        with services.db.transaction() as db:
            reg: Registration = register(
                db, hasher=services.hasher, actor="test", clock=services.clock, **options
            )
        return RegisteredClient(
            reg.client_id,
            reg.client_secret,
            options["redirect_uris"][0] if options["redirect_uris"] else "",
        )

    return make


@pytest.fixture
def rp(new_client: Callable[..., RegisteredClient]) -> RegisteredClient:
    return new_client()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


class Browser:
    """A person's browser: its own cookies, signing in through the pages' API."""

    def __init__(self, client: Any, softhsm: SoftHSM) -> None:
        self.client = client
        self.softhsm = softhsm

    def authorize(self, rp: RegisteredClient, **params: Any) -> Any:
        params.setdefault("response_type", "code")
        params.setdefault("client_id", rp.client_id)
        params.setdefault("redirect_uri", rp.redirect_uri)
        params.setdefault("scope", "openid profile email professional")
        params.setdefault("state", secrets.token_urlsafe(8))
        return self.client.get("/authorize?" + urlencode(params))

    def flow_of(self, response: Any) -> str:
        location = response.headers["Location"]
        assert location.startswith("/login?flow="), location
        return location.split("=", 1)[1]

    def login_password(self, flow_id: str, person: Person, password: str = PASSWORD) -> Any:
        flow = self.client.get(f"/api/login/{flow_id}").json
        return self.client.post(
            f"/api/login/{flow_id}/password",
            json={
                "csrf_token": flow["csrf_token"],
                "matricule": person.matricule,
                "password": password,
            },
        )

    def login_card(self, flow_id: str, card: Card, **kw: Any) -> Any:
        flow = self.client.get(f"/api/login/{flow_id}").json
        challenge = flow["challenge"]
        token = sign_challenge(
            self.softhsm, card, nonce=challenge["nonce"], origin=challenge["origin"], **kw
        )
        return self.client.post(
            f"/api/login/{flow_id}/smartcard",
            json={"csrf_token": flow["csrf_token"], "auth_token": token},
        )

    def follow(self, redirect_to: str) -> Any:
        parts = urlsplit(redirect_to)
        return self.client.get(f"{parts.path}?{parts.query}")

    def sign_in(
        self, rp: RegisteredClient, person: Person, *, method: str = "password", **params: Any
    ) -> dict[str, str]:
        """Authorize → sign in → back to the RP: the query of the RP's callback."""
        response = self.authorize(rp, **params)
        if response.headers["Location"].startswith("/login?flow="):
            flow_id = self.flow_of(response)
            signed = (
                self.login_password(flow_id, person)
                if method == "password"
                else self.login_card(flow_id, person.card)
            )
            assert signed.status_code == 200, signed.json
            response = self.follow(signed.json["redirect_to"])
        return callback(response, rp)


def callback(response: Any, rp: RegisteredClient) -> dict[str, str]:
    assert response.status_code in (302, 303), response.data[:500]
    location = response.headers["Location"]
    assert location.startswith(rp.redirect_uri), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def browser(app, softhsm: SoftHSM) -> Callable[[], Browser]:  # type: ignore[no-untyped-def]
    def make() -> Browser:
        return Browser(app.test_client(), softhsm)

    return make


def basic(rp: RegisteredClient) -> dict[str, str]:
    auth = base64.b64encode(f"{rp.client_id}:{rp.client_secret}".encode()).decode()
    return {"Authorization": f"Basic {auth}"}


class Tokens:
    """The relying service's side: exchanging codes, refreshing, introspecting."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def exchange(self, rp: RegisteredClient, code: str, verifier: str, **extra: Any) -> Any:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": rp.redirect_uri,
            "code_verifier": verifier,
            **extra,
        }
        if rp.client_secret:
            return self.client.post("/token", data=data, headers=basic(rp))
        return self.client.post("/token", data={**data, "client_id": rp.client_id})

    def refresh(self, rp: RegisteredClient, refresh_token: str) -> Any:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if rp.client_secret:
            return self.client.post("/token", data=data, headers=basic(rp))
        return self.client.post("/token", data={**data, "client_id": rp.client_id})

    def introspect(self, rp: RegisteredClient, token: str) -> dict[str, Any]:
        response = self.client.post("/introspect", data={"token": token}, headers=basic(rp))
        assert response.status_code == 200, response.json
        return response.json  # type: ignore[no-any-return]

    def userinfo(self, access_token: str) -> Any:
        return self.client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


@pytest.fixture
def tokens(app) -> Tokens:  # type: ignore[no-untyped-def]
    return Tokens(app.test_client())


def full_sign_in(
    b: Browser,
    rp: RegisteredClient,
    person: Person,
    tokens: Tokens,
    *,
    method: str = "password",
    **params: Any,
) -> dict[str, Any]:
    """Sign in and exchange the code: the token response."""
    verifier, challenge = pkce()
    params.setdefault("nonce", secrets.token_urlsafe(8))
    cb = b.sign_in(
        rp, person, method=method, code_challenge=challenge, code_challenge_method="S256", **params
    )
    assert "code" in cb, cb
    response = tokens.exchange(rp, cb["code"], verifier)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def claims_of(jwt: str) -> dict[str, Any]:
    import json

    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def header_of(jwt: str) -> dict[str, Any]:
    import json

    head = jwt.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))  # type: ignore[no-any-return]
