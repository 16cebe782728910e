"""The outbox: mail written with the change, delivered later through a real SMTP server, retried
while the server is down, never lost, never sent twice, never kept in clear."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from authsvc.app import Services
from authsvc.mail import messages
from authsvc.outbox.models import OutboxMessage
from authsvc.outbox.service import LEASE, RETRY_PERIOD, enqueue
from authsvc.security.passwords import CHEAP

from ..mailserver import SmtpServer


@pytest.fixture
def mailing(settings, clock, smtp_server: SmtpServer) -> Iterator[Services]:  # type: ignore[no-untyped-def]
    smtp = dataclasses.replace(settings, smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    services = Services.from_settings(smtp, clock=clock, argon2=CHEAP)
    yield services
    services.close()


def queue_code(services: Services, code: str = "123456", to: str = "anne@example.lu") -> None:
    with services.db.transaction() as session:
        enqueue(
            session,
            "mail",
            messages.verification_code(to=to, name="Anne Muller", code=code, lang="fr"),
            summary=f"code to {to}",
            sealer=services.sealer,
            clock=services.clock,
        )


def test_mail_is_delivered_through_smtp(mailing: Services, smtp_server: SmtpServer) -> None:
    queue_code(mailing, "654321")
    report = mailing.outbox.deliver_due()
    assert report.delivered == 1
    (mail,) = smtp_server.inbox.wait(1)
    assert mail["To"] == "anne@example.lu"
    assert mail["From"] == "no-reply@localhost"
    assert smtp_server.inbox.code(mail) == "654321"
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and "654321" in html.get_content()
    assert mail["Content-Language"] == "fr"


def test_payload_is_encrypted_at_rest_and_erased_once_delivered(mailing: Services) -> None:
    queue_code(mailing, "987654")
    with mailing.db.transaction() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.payload is not None
        assert b"987654" not in row.payload
        assert "987654" not in row.summary
    mailing.outbox.deliver_due()
    with mailing.db.transaction() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.payload is None
        assert row.delivered_at is not None


def test_smtp_down_delays_the_mail_and_never_loses_it(
    mailing: Services, smtp_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    smtp_server.stop()
    queue_code(mailing, "111222")
    first = mailing.outbox.deliver_due()
    assert (first.delivered, first.failed) == (0, 1)
    with mailing.db.transaction() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.attempts == 1
        assert row.last_error and "127.0.0.1" in row.last_error
        assert row.next_attempt_at - clock.now() <= timedelta(seconds=30)  # first retry within 30 s
    # not due yet: nothing is tried
    assert mailing.outbox.deliver_due().failed == 0
    clock.advance(seconds=20)
    assert mailing.outbox.deliver_due().failed == 1
    smtp_server.start()
    clock.advance(minutes=5)
    assert mailing.outbox.deliver_due().delivered == 1
    assert smtp_server.inbox.code(smtp_server.inbox.wait(1)[0]) == "111222"
    assert mailing.outbox.pending() == 0


def test_backoff_grows_and_gives_up_after_the_retry_period(
    mailing: Services, smtp_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    smtp_server.stop()
    queue_code(mailing)
    delays = []
    while True:
        report = mailing.outbox.deliver_due()
        if report.abandoned:
            break
        with mailing.db.transaction() as session:
            row = session.scalars(select(OutboxMessage)).one()
        delays.append(row.next_attempt_at - clock.now())
        clock.advance(seconds=delays[-1].total_seconds())
    assert delays[0] <= timedelta(seconds=30)
    assert delays == sorted(delays)
    assert max(delays) == timedelta(hours=1)
    assert sum(delays, timedelta()) >= timedelta(hours=24)
    assert sum(delays, timedelta()) >= RETRY_PERIOD - timedelta(hours=1)
    with mailing.db.transaction() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.abandoned_at is not None and row.payload is None


def test_without_smtp_mail_goes_to_the_instance_mail_folder(services: Services) -> None:
    queue_code(services, "222333")
    assert services.outbox.deliver_due().delivered == 1
    (eml,) = services.settings.mail_dir.glob("*.eml")
    assert "Verification code: 222333" in eml.read_text()


def test_a_crashed_workers_claim_expires(mailing: Services, smtp_server: SmtpServer, clock) -> None:  # type: ignore[no-untyped-def]
    queue_code(mailing)
    claimed = mailing.outbox.claim()  # a worker claims, then dies before delivering
    assert len(claimed) == 1
    assert mailing.outbox.deliver_due().delivered == 0  # still claimed by the dead worker
    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert mailing.outbox.deliver_due().delivered == 0  # the lease outlasts a slow batch
    clock.advance(seconds=2)
    assert mailing.outbox.deliver_due().delivered == 1
    assert len(smtp_server.inbox.wait(1)) == 1


@pytest.mark.postgresql_only
def test_concurrent_workers_deliver_each_mail_exactly_once(
    mailing: Services, smtp_server: SmtpServer
) -> None:
    for i in range(40):
        queue_code(mailing, f"{i:06d}", to=f"p{i}@example.lu")
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        while mailing.outbox.deliver_due(limit=3).delivered:
            pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    received = sorted(str(m["To"]) for m in smtp_server.inbox.wait(40))
    assert received == sorted(f"p{i}@example.lu" for i in range(40))
    assert len(received) == len(set(received))
