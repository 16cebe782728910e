"""Delivery in detail: claims a worker can keep, messages that expire, and SMTP security
(AUTHSVC_SMTP_TLS, AUTHSVC_SMTP_USERNAME / AUTHSVC_SMTP_PASSWORD)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from authsvc.app import Services
from authsvc.clock import FrozenClock
from authsvc.mail import messages
from authsvc.mail.sender import MailSender
from authsvc.outbox.models import OutboxMessage
from authsvc.outbox.service import CLAIM_BATCH, DELIVERY_TIMEOUT, LEASE, Outbox, enqueue
from authsvc.security.passwords import CHEAP

from ..conftest import log_text
from ..mailserver import Inbox, free_port


def queue(services: Services, *, to: str = "anne@example.lu", expires_at: Any = None) -> None:
    with services.db.transaction() as session:
        enqueue(
            session,
            "mail",
            messages.verification_code(to=to, name="Anne Muller", code="123456", lang="en"),
            summary=f"code to {to}",
            sealer=services.sealer,
            clock=services.clock,
            expires_at=expires_at,
        )


def row(services: Services) -> OutboxMessage:
    with services.db.transaction() as session:
        return session.scalars(select(OutboxMessage)).one()


# --- claims ---------------------------------------------------------------------------------------


def test_the_lease_outlasts_a_whole_batch_of_slow_deliveries() -> None:
    assert CLAIM_BATCH <= 5
    assert LEASE > CLAIM_BATCH * DELIVERY_TIMEOUT


def test_a_round_claims_a_few_messages(services: Services) -> None:
    for i in range(12):
        queue(services, to=f"p{i}@example.lu")
    assert len(services.outbox.claim()) == CLAIM_BATCH
    assert services.outbox.deliver_due().delivered == CLAIM_BATCH


def test_a_worker_settles_only_what_it_still_owns(
    services: Services, clock: FrozenClock, authsvc_log: list[logging.LogRecord]
) -> None:
    """Worker A is slower than its lease; B claims the message again and delivers it. A's late
    outcome (a failure, here) must not overwrite B's."""
    queue(services)
    slow_handler_calls: list[str] = []

    def slow(message: Any) -> None:
        slow_handler_calls.append(message["to"])
        clock.advance(seconds=LEASE.total_seconds() + 1)  # A is stuck past its lease …
        # … meanwhile B claims and delivers
        assert b.deliver_due().delivered == 1
        raise ConnectionError("A's server finally timed out")

    delivered: list[str] = []
    a = Outbox(services.db, services.sealer, {"mail": slow}, clock=clock)
    b = Outbox(
        services.db, services.sealer, {"mail": lambda m: delivered.append(m["to"])}, clock=clock
    )
    report = a.deliver_due()
    assert report.failed == 0 and report.delivered == 0
    assert delivered == ["anne@example.lu"]
    message = row(services)
    assert message.delivered_at is not None  # B's outcome stands
    assert message.last_error is None and message.claimed_until is None
    assert "the claim expired during delivery" in log_text(authsvc_log)


# --- expiry ---------------------------------------------------------------------------------------


def test_an_expired_message_is_abandoned_not_delivered(
    services: Services, clock: FrozenClock
) -> None:
    delivered: list[Any] = []
    outbox = Outbox(services.db, services.sealer, {"mail": delivered.append}, clock=clock)
    queue(services, expires_at=clock.now() + timedelta(minutes=10))
    clock.advance(minutes=10)
    report = outbox.deliver_due()
    assert (report.delivered, report.abandoned) == (0, 1)
    assert delivered == []
    message = row(services)
    assert message.abandoned_at is not None and message.payload is None
    assert message.attempts == 0  # never tried


def test_a_message_that_would_be_retried_after_its_expiry_is_abandoned(
    services: Services, clock: FrozenClock
) -> None:
    def down(message: Any) -> None:
        raise ConnectionError("mail server down")

    outbox = Outbox(services.db, services.sealer, {"mail": down}, clock=clock)
    queue(services, expires_at=clock.now() + timedelta(minutes=10))
    attempts = 0
    while not row(services).abandoned_at:
        report = outbox.deliver_due()
        attempts += report.failed + report.abandoned
        clock.advance(seconds=(row(services).next_attempt_at - clock.now()).total_seconds())
        assert clock.now() - row(services).created_at < timedelta(minutes=11)
    assert 1 < attempts < 10  # a few tries within the 10 minutes, not 3 days of them


def test_the_verification_mail_expires_with_its_code(
    activation, letter, services: Services, clock: FrozenClock
) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    a.post("email", email="anne@example.lu")
    message = row(services)
    assert message.expires_at == clock.now() + timedelta(minutes=10)


@pytest.fixture
def activation(app, services):  # type: ignore[no-untyped-def]
    from ..activation.conftest import Activation

    return lambda: Activation(app.test_client(), services)


@pytest.fixture
def letter(services: Services):  # type: ignore[no-untyped-def]
    from authsvc.activation import letters
    from authsvc.directory.importer import import_directory

    from ..activation.conftest import ANNE, HEADER, Letter

    with services.db.transaction() as session:
        import_directory(
            session,
            f"{HEADER}{ANNE},Anne,Muller,doctor,1\n".encode(),
            actor="t",
            clock=services.clock,
        )
        issued = letters.issue(
            session, ANNE, hasher=services.hasher, actor="t", clock=services.clock
        )
    return Letter(ANNE, issued.activation_code, issued.letter_id)


@pytest.mark.parametrize("address", ["jörg@example.lu", "anne@exämple.lu", "用户@example.lu"])
def test_addresses_that_need_smtputf8_are_refused(activation, letter, address: str) -> None:  # type: ignore[no-untyped-def]
    a = activation()
    a.start(letter.code, letter.matricule)
    response = a.post("email", email=address)
    if "@exämple" in address:  # an internationalised domain is fine: it has an ASCII form
        assert response.status_code == 200, response.json
        return
    assert response.status_code == 400
    assert response.json["error"] == "invalid_email"


# --- SMTP security --------------------------------------------------------------------------------


@dataclasses.dataclass
class TLSFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        return context


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1 (the client trusts it in these tests only)."""
    import ipaddress

    folder = tmp_path_factory.mktemp("smtp-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TLSFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


USER, PASSWORD = "authsvc", "s3cret-Smtp-Passw0rd"


class Authenticator:
    def __init__(self) -> None:
        self.logins: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        ):
            self.logins.append(data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp(tls_files: TLSFiles) -> Iterator[Callable[..., tuple[Inbox, int, Authenticator]]]:
    """``smtp(starttls=True, implicit_tls=False, auth=False)``: an SMTP server on 127.0.0.1."""
    controllers: list[Controller] = []

    def start(*, starttls: bool = True, implicit_tls: bool = False, auth: bool = False):  # type: ignore[no-untyped-def]
        inbox, port, authenticator = Inbox(), free_port(), Authenticator()
        kwargs: dict[str, Any] = {}
        if starttls and not implicit_tls:
            kwargs["tls_context"] = tls_files.server_context()
        if implicit_tls:
            kwargs["ssl_context"] = tls_files.server_context()
        if auth:
            kwargs["authenticator"] = authenticator
            kwargs["auth_require_tls"] = False  # so that the client's own refusal is what is tested
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return inbox, port, authenticator

    yield start
    for controller in controllers:
        controller.stop()


def sender(tls_files: TLSFiles, port: int, tmp_path: Path, **options: Any) -> MailSender:
    return MailSender(
        sender="no-reply@example.lu",
        smtp_host="127.0.0.1",
        smtp_port=port,
        mail_dir=tmp_path,
        tls_context=tls_files.client_context,
        **options,
    )


MAIL = messages.verification_code(to="anne@example.lu", name="Anne", code="123456", lang="en")


def test_starttls_required_and_offered(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, _ = smtp(starttls=True)
    sender(tls_files, port, tmp_path, tls="starttls")(MAIL)
    assert len(inbox.wait(1)) == 1


def test_starttls_required_but_not_offered_sends_nothing(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, _ = smtp(starttls=False)
    with pytest.raises(ConnectionError, match="does not offer STARTTLS"):
        sender(tls_files, port, tmp_path, tls="starttls")(MAIL)
    assert inbox.messages == []


def test_opportunistic_sends_in_clear_without_starttls(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, _ = smtp(starttls=False)
    sender(tls_files, port, tmp_path)(MAIL)  # the default: today's behaviour
    assert len(inbox.wait(1)) == 1


def test_implicit_tls(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, _ = smtp(implicit_tls=True)
    sender(tls_files, port, tmp_path, tls="tls")(MAIL)
    assert len(inbox.wait(1)) == 1


def test_a_certificate_that_is_not_trusted_is_refused(smtp, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, _ = smtp(starttls=True)
    plain = MailSender(
        sender="no-reply@example.lu",
        smtp_host="127.0.0.1",
        smtp_port=port,
        mail_dir=tmp_path,
        tls="starttls",
    )
    with pytest.raises(
        ConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"
    ):
        plain(MAIL)
    assert inbox.messages == []


def test_login_with_username_and_password(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, authenticator = smtp(starttls=True, auth=True)
    sender(tls_files, port, tmp_path, tls="starttls", username=USER, password=PASSWORD)(MAIL)
    assert len(inbox.wait(1)) == 1
    assert authenticator.logins == [USER]


def test_the_password_is_never_sent_in_clear(smtp, tls_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inbox, port, authenticator = smtp(starttls=False, auth=True)
    mail = sender(tls_files, port, tmp_path, username=USER, password=PASSWORD)  # opportunistic
    with pytest.raises(ConnectionError, match="not sent in clear"):
        mail(MAIL)
    assert authenticator.logins == [] and inbox.messages == []


def test_a_wrong_password_is_never_echoed(
    smtp, tls_files, tmp_path, settings, clock, authsvc_log
) -> None:  # type: ignore[no-untyped-def]
    """Through the outbox, as in production: the error kept and logged names no password."""
    inbox, port, _ = smtp(starttls=True, auth=True)
    wrong = "wr0ng-" + PASSWORD
    services = Services.from_settings(
        dataclasses.replace(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_tls="starttls",
            smtp_username=USER,
            smtp_password=wrong,
        ),
        clock=clock,
        argon2=CHEAP,
    )
    mail = services.outbox.handlers["mail"]
    assert isinstance(mail, MailSender)
    mail._tls_context = tls_files.client_context  # trust the test server's certificate
    try:
        queue(services)
        assert services.outbox.deliver_due().failed == 1
        error = row(services).last_error or ""
        assert "535" in error or "Authentication" in error, error
        for text in (error, log_text(authsvc_log), repr(services.settings), repr(mail)):
            assert wrong not in text
            assert PASSWORD not in text
        assert inbox.messages == []
    finally:
        services.close()
