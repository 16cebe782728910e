"""What the person meets on the way: a code typed with spaces, the password manager's user name,
texts that say what to do, and a broken configuration that is not their problem."""

from __future__ import annotations

import dataclasses
import shutil

from sqlalchemy import select

from authsvc import create_app
from authsvc.activation.flows import ActivationFlow
from authsvc.app import Services
from authsvc.security.passwords import CHEAP
from authsvc.web.i18n import CATALOGS, catalog

from ..conftest import log_text
from .conftest import ANNE, GOOD_PASSWORD, Activation


def test_a_code_typed_with_spaces_is_the_code(activation, letter, db) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    code = a.mailed_code()
    response = a.post("email/verify", code=f" {code[:3]} \t{code[3:]} ")  # "286 490", as copied
    assert response.status_code == 200, response.json
    assert response.json["state"] == "password_required"
    with db.transaction() as s:
        assert s.scalars(select(ActivationFlow.email_code_attempts)).one() == 0  # no try spent


def test_the_password_step_offers_the_matricule_to_the_password_manager(activation, letter) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.to_password(letter)
    html = a.client.get(f"/activate/{a.flow['flow_id']}").get_data(as_text=True)
    assert f'autocomplete="username" value="{ANNE}"' in html
    assert 'value="Anne Muller"' not in html


def test_texts_tell_professionals_what_they_can_do() -> None:
    for lang in CATALOGS:
        texts = catalog(lang)
        # the test platform's command is not for professionals
        assert "authsvc card-agent" not in texts["card.no_agent"]
        assert "LuxTrust" in texts["card.no_agent"]
        # the last page says how to sign in from now on
        assert "matricule" in texts["done.intro"]
    for lang in ("en", "fr"):
        texts = catalog(lang)
        assert texts["error.invalid_card.holder_mismatch"] != catalog("en")["error.invalid_card"]
        if lang == "fr":
            assert texts["card.open_agent"] != catalog("en")["card.open_agent"]


def test_a_broken_trust_anchor_file_is_a_503_without_details(
    settings, clock, letter, softhsm, card_for, revocation_server, test_ca, tmp_path, authsvc_log
) -> None:  # type: ignore[no-untyped-def]
    anchors = tmp_path / "anchors.pem"
    shutil.copyfile(test_ca.trust_anchors, anchors)
    tuned = dataclasses.replace(settings, card_trust_anchors=anchors)
    services = Services.from_settings(tuned, clock=clock, argon2=CHEAP)
    try:
        app = create_app(tuned, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
        a = Activation(app.test_client(), services, softhsm)
        challenge = a.to_smartcard(letter)
        anchors.write_text("this is not PEM\n")  # an operator's mistake
        response = a.post("smartcard", auth_token=a.token(card_for(ANNE), challenge))
        assert response.status_code == 503
        assert response.json["error"] == "temporarily_unavailable"
        assert str(tmp_path) not in response.get_data(as_text=True)
        assert "AUTHSVC_CARD_TRUST_ANCHORS" not in response.get_data(as_text=True)
        assert response.headers["Retry-After"]
        # the operator's log says what is wrong
        assert f"AUTHSVC_CARD_TRUST_ANCHORS: {anchors}" in log_text(authsvc_log)
        # fixed, it works again (with a fresh challenge)
        shutil.copyfile(test_ca.trust_anchors, anchors)
        fresh = a.get().json["challenge"]
        done = a.post("smartcard", auth_token=a.token(card_for(ANNE), fresh))
        assert done.status_code == 200, done.json
        assert GOOD_PASSWORD not in log_text(authsvc_log)
    finally:
        services.close()
