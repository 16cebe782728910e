"""Signing keys on a PKCS#11 token (SoftHSM2) when AUTHSVC_SIGNING_KEY_TOKEN is set."""

from __future__ import annotations

import dataclasses
import secrets

import pkcs11
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import select

from authsvc import create_app
from authsvc.app import Services
from authsvc.oidc.models import SigningKey
from authsvc.security.passwords import CHEAP

from .conftest import Browser, Tokens, full_sign_in, header_of


@pytest.fixture
def hsm_app(settings, clock, softhsm, test_ca):  # type: ignore[no-untyped-def]
    label = f"keys-{secrets.token_hex(3)}"
    pin = "4321" + secrets.token_hex(2)
    softhsm.init_token(label, so_pin="so-" + pin, user_pin=pin)
    import os

    os.environ["SOFTHSM2_CONF"] = str(softhsm.conf)
    pkcs11.lib(settings.pkcs11_module).reinitialize()
    on_token = dataclasses.replace(
        settings,
        signing_key_token=label,
        signing_key_pin=pin,
        card_trust_anchors=test_ca.trust_anchors,
    )
    services = Services.from_settings(on_token, clock=clock, argon2=CHEAP)
    app = create_app(on_token, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    yield app, services, label, pin
    services.close()


def test_tokens_are_signed_on_the_token(hsm_app, anne, rp, softhsm) -> None:  # type: ignore[no-untyped-def]
    app, services, label, pin = hsm_app
    token = full_sign_in(Browser(app.test_client(), softhsm), rp, anne, Tokens(app.test_client()))
    keys = KeySet.import_key_set(app.test_client().get("/jwks.json").json)
    for name in ("id_token", "access_token"):
        decoded = jwt.decode(token[name], keys, algorithms=["ES256"])
        assert decoded.claims["iss"] == "http://127.0.0.1:5000"
    assert header_of(token["access_token"])["typ"] == "at+jwt"
    with services.db.transaction() as db:
        rows = db.scalars(select(SigningKey)).all()
    assert rows
    assert all(r.private_key is None and r.pkcs11_label == r.kid for r in rows)
    # the private keys are on the token, and cannot leave it
    with softhsm.session(label, user_pin=pin) as session:
        for row in rows:
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=row.kid)
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.SENSITIVE] is True


def test_rotation_on_the_token_and_rs256(hsm_app, anne, new_client, softhsm) -> None:  # type: ignore[no-untyped-def]
    app, services, _, _ = hsm_app
    services.keys.ready()
    services.keys.rotate(actor="test")
    legacy = new_client(name="Legacy", id_token_alg="RS256")
    token = full_sign_in(
        Browser(app.test_client(), softhsm), legacy, anne, Tokens(app.test_client())
    )
    keys = KeySet.import_key_set(app.test_client().get("/jwks.json").json)
    assert (
        jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims["aud"] == legacy.client_id
    )
    assert len(keys.keys) == 4
