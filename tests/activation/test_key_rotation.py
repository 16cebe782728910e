"""Rotating AUTHSVC_SECRET_KEY: what was made under the old key keeps working while the old key is
in AUTHSVC_SECRET_KEY_FALLBACKS — printed letters, queued mail, flows under way."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from authsvc import create_app
from authsvc.app import Services
from authsvc.config import Settings
from authsvc.security.passwords import CHEAP

from .conftest import Activation

K2 = "the-next-secret-key-" + "k" * 40


@pytest.fixture
def restart(settings: Settings, clock, softhsm) -> Iterator:  # type: ignore[no-untyped-def, type-arg]
    """``restart(secret, fallbacks)``: the instance started again with other secrets."""
    started: list[Services] = []

    def start(secret: str, fallbacks: tuple[str, ...] = ()) -> tuple[Services, Activation]:
        rotated = dataclasses.replace(
            settings,
            secret_key=secret.encode(),
            secret_key_fallbacks=tuple(k.encode() for k in fallbacks),
        )
        services = Services.from_settings(rotated, clock=clock, argon2=CHEAP)
        started.append(services)
        app = create_app(rotated, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
        return services, Activation(app.test_client(), services, softhsm)

    yield start
    for services in started:
        services.close()


def test_letter_flow_and_queued_mail_survive_a_rotation(
    activation, letter, services, settings, restart
) -> None:  # type: ignore[no-untyped-def]
    k1 = settings.secret_key.decode()
    before = activation()
    assert before.start(letter.code, letter.matricule).status_code == 201
    assert before.post("email", email="anne@example.lu").status_code == 200  # queued, not sent
    cookie = before.client.get_cookie("authsvc_activation").value

    new, after = restart(K2, (k1,))
    # the mail queued under K1 is delivered by the instance running on K2
    report = new.outbox.deliver_due()
    assert (report.delivered, report.abandoned) == (1, 0)
    # the flow started under K1 goes on: its cookie, its email code
    after.flow = before.flow
    after.client.set_cookie("authsvc_activation", cookie, domain="localhost")
    assert after.post("email/verify", code=after.mailed_code()).json == {
        "state": "password_required"
    }
    # and the printed letter, whose code was hashed under K1, still starts a flow
    again = Activation(after.client.application.test_client(), new)
    assert again.start(letter.code, letter.matricule).status_code == 201


def test_without_the_old_key_in_the_fallbacks_nothing_made_under_it_works(
    activation, letter, restart
) -> None:  # type: ignore[no-untyped-def]
    before = activation()
    before.start(letter.code, letter.matricule)
    before.post("email", email="anne@example.lu")

    new, after = restart(K2)
    assert after.start(letter.code, letter.matricule).json["error"] == "invalid_activation"
    report = new.outbox.deliver_due()
    assert report.abandoned == 1  # it cannot be decrypted: logged, not retried for 3 days


def test_new_mail_is_sealed_with_the_current_key(letter, settings, restart) -> None:  # type: ignore[no-untyped-def]
    """Mail queued after the rotation is readable by an instance that knows only K2."""
    k1 = settings.secret_key.decode()
    _, rotated = restart(K2, (k1,))
    assert rotated.start(letter.code, letter.matricule).status_code == 201
    assert rotated.post("email", email="anne@example.lu").status_code == 200
    only_k2, _ = restart(K2)
    assert only_k2.outbox.deliver_due().delivered == 1
