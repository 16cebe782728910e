"""SMTP down during activation: no request fails, no mail is lost (SECURITY "Nothing lost")."""

from __future__ import annotations

import dataclasses

from authsvc import create_app
from authsvc.app import Services
from authsvc.security.passwords import CHEAP

from ..mailserver import SmtpServer
from .conftest import GOOD_PASSWORD, Activation


def test_smtp_down_delays_mail_and_the_user_still_finishes(
    settings, clock, letter, smtp_server: SmtpServer, softhsm, card_for, revocation_server, test_ca
) -> None:  # type: ignore[no-untyped-def]
    smtp = dataclasses.replace(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        card_trust_anchors=test_ca.trust_anchors,
    )
    services = Services.from_settings(smtp, clock=clock, argon2=CHEAP)
    app = create_app(smtp, TESTING=True, SERVICES=services, AUTHSVC_OUTBOX_WORKER=False)
    a = Activation(app.test_client(), services, softhsm)
    assert a.start(letter.code, letter.matricule).status_code == 201

    smtp_server.stop()
    assert a.post("email", email="anne@example.lu").status_code == 200  # the request succeeds
    assert services.outbox.deliver_due().failed == 1  # the mail waits
    assert smtp_server.inbox.messages == []
    smtp_server.start()
    clock.advance(seconds=30)
    assert services.outbox.deliver_due().delivered == 1  # and arrives when the server is back
    code = smtp_server.inbox.code(smtp_server.inbox.wait(1)[0])

    assert a.post("email/verify", code=code).status_code == 200
    challenge = a.post("password", password=GOOD_PASSWORD).json["challenge"]
    smtp_server.stop()
    done = a.post("smartcard", auth_token=a.token(card_for(), challenge))
    assert done.status_code == 200  # activation completes with the mail server down
    assert done.json["state"] == "active"
    assert services.outbox.deliver_due().failed == 1
    smtp_server.start()
    clock.advance(minutes=1)
    assert services.outbox.deliver_due().delivered == 1
    activated = smtp_server.inbox.wait(2)[1]
    assert str(activated["Subject"]) == "Votre compte est actif"  # in the flow's language
    services.close()
