"""A password sign-in's writes (``Login.password``): what its Core statements leave in the
database, the flow's guarded ``UPDATE``, the count of wrong passwords and the lock, the same
Argon2 work for every refusal, and the audit events with their chain."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.app import Services
from authsvc.audit import service as audit
from authsvc.audit.models import AuditEvent
from authsvc.audit.tags import EventTag
from authsvc.clock import FrozenClock
from authsvc.directory.importer import import_directory
from authsvc.login.models import LoginFlow
from authsvc.login.service import FLOW_LIFETIME, LOCK_AFTER, LoginError
from authsvc.security.passwords import Argon2Parameters, PasswordHasher
from authsvc.security.secrets import Purpose
from authsvc.sessions.models import ProviderSession

from ..signins import IP, USER_AGENT, password, start

PASSWORD = "violet harbour seldom anchor"


def accounts(services: Services, n: int, *, password_hash: str | None = None) -> list[str]:
    """``n`` active accounts with ``PASSWORD`` (or the hash given): their matricules."""
    numbers = [matricule.make(date(1980, 5, 17), i + 1) for i in range(n)]
    csv = "matricule,given_name,family_name,profession,provider_code\n" + "".join(
        f"{number},Anne,Muller,doctor,123456-78\n" for number in numbers
    )
    with services.db.transaction() as db:
        import_directory(db, csv.encode(), actor="test", clock=services.clock)
    stored = password_hash or services.passwords.hash(PASSWORD)
    with services.db.transaction() as db:
        for number in numbers:
            letters.issue(db, number, hasher=services.hasher, actor="test", clock=services.clock)
        db.flush()
        for number in numbers:
            account = account_of(db, number)
            account.status = AccountStatus.ACTIVE
            account.password_hash = stored
            account.activated_at = account.status_changed_at = services.clock.now()
    return numbers


def account_of(db: Any, number: str) -> Account:
    return db.query(Account).join(Account.professional).filter_by(matricule=number).one()  # type: ignore[no-any-return]


def refused(services: Services, flow: tuple[str, str, str], number: str, secret: str) -> str:
    with pytest.raises(LoginError) as error:
        password(services, flow, number, secret)
    return error.value.code


def events(services: Services) -> list[AuditEvent]:
    with services.db.read_transaction() as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.chain == 0).order_by("seq")))


def chain_ok(services: Services) -> bool:
    with services.db.read_transaction() as db:
        return audit.verify(db).ok


class NoThrottle:
    """The per-matricule back-off, out of the way of a test that counts failures."""

    def wait(self, key: str) -> int:
        return 0

    def hit(self, key: str) -> None:
        pass

    def clear(self, key: str) -> None:
        pass


def test_a_sign_in_writes_the_session_the_flow_and_the_account(services: Services) -> None:
    # a hash made with other Argon2id parameters is rehashed with the current ones
    older = PasswordHasher(Argon2Parameters(time_cost=2, memory_cost=2048, parallelism=1))
    (number,) = accounts(services, 1, password_hash=older.hash(PASSWORD))
    with services.db.transaction() as db:
        account_of(db, number).failed_logins = 4
    flow = start(services)
    before = len(events(services))

    signed = password(services, flow, number, PASSWORD)

    with services.db.read_transaction() as db:
        account = account_of(db, number)
        assert account.failed_logins == 0
        assert account.password_hash is not None
        assert not services.passwords.needs_rehash(account.password_hash)
        assert services.passwords.verify(account.password_hash, PASSWORD)
        session = db.get_one(ProviderSession, signed.opened.session.id)
        assert session.cookie_hash == services.hasher.hash(
            Purpose.SESSION_COOKIE, signed.opened.cookie
        )
        assert (session.account_id, session.amr, session.card_id) == (account.id, ["pwd"], None)
        now = services.clock.now()
        assert session.auth_time == session.created_at == session.last_seen_at == now
        assert session.expires_at.timestamp() - now.timestamp() == (
            services.settings.session_max_age
        )
        assert (session.user_agent, session.ip, session.ended_at) == (
            USER_AGENT,
            IP,
            None,
        )
        assert signed.opened.session.expires_at == session.expires_at
        stored = db.get_one(LoginFlow, flow[0])
        assert (stored.authenticated_at, stored.account_id, stored.completed_at) == (
            now,
            account.id,
            None,
        )
    assert signed.redirect_to.startswith(f"{services.settings.issuer}/authorize?")
    assert f"login_flow={flow[0]}" in signed.redirect_to
    new = events(services)[before:]
    assert [(e.tag, e.actor, e.subject, e.data) for e in new] == [
        (
            EventTag.SESSION_OPENED,
            f"account:{account.id}",
            f"session:{session.id[:12]}",
            {"amr": ["pwd"], "ip": IP, "card": None},
        ),
        (
            EventTag.LOGIN_SUCCEEDED,
            f"account:{account.id}",
            f"professional:{number}",
            {"method": "password", "client_id": "rp", "ip": IP},
        ),
    ]
    assert chain_ok(services)


def test_a_flow_for_a_page_is_used_up_at_sign_in(services: Services) -> None:
    (number,) = accounts(services, 1)
    flow = start(services, page="/account")
    signed = password(services, flow, number, PASSWORD)
    assert signed.redirect_to == f"{services.settings.issuer}/account"
    with services.db.read_transaction() as db:
        stored = db.get_one(LoginFlow, flow[0])
        assert stored.completed_at == stored.authenticated_at == services.clock.now()
    assert refused(services, flow, number, PASSWORD) == "flow_expired"


@pytest.mark.parametrize("secret", [PASSWORD, "wrong password"])
def test_a_flow_that_expires_during_argon2_is_refused_and_nothing_is_written(
    services: Services, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    (number,) = accounts(services, 1)
    flow = start(services)
    verify = PasswordHasher.verify

    def slow(self: PasswordHasher, stored: Any, given: str) -> bool:
        clock.advance(seconds=FLOW_LIFETIME.total_seconds())
        return verify(self, stored, given)

    monkeypatch.setattr(PasswordHasher, "verify", slow)
    before = len(events(services))
    assert refused(services, flow, number, secret) == "flow_expired"
    assert len(events(services)) == before
    with services.db.read_transaction() as db:
        assert account_of(db, number).failed_logins == 0
        assert db.scalars(select(ProviderSession)).all() == []
        assert db.get_one(LoginFlow, flow[0]).authenticated_at is None


def test_wrong_passwords_count_and_lock_the_account(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "login_failures", NoThrottle())
    (number,) = accounts(services, 1)
    for n in range(1, LOCK_AFTER + 1):
        before = len(events(services))
        assert refused(services, start(services), number, "wrong password") == "invalid_credentials"
        with services.db.read_transaction() as db:
            account = account_of(db, number)
        assert account.failed_logins == n
        assert account.last_failed_login_at == services.clock.now()
        new = events(services)[before:]
        failed = {"method": "password", "ip": IP, "known": True, "failed_logins": n}
        expected = [(EventTag.LOGIN_FAILED, f"ip:{IP}", f"professional:{number}", failed)]
        if n == LOCK_AFTER:
            locked = {"account_id": str(account.id), "reason": f"{LOCK_AFTER} wrong passwords"}
            expected.insert(
                0, (EventTag.ACCOUNT_LOCKED, "system", f"professional:{number}", locked)
            )
        assert [(e.tag, e.actor, e.subject, e.data) for e in new] == expected
    assert account.status == AccountStatus.LOCKED
    # the right password on a locked account: the same answer, not counted
    before = len(events(services))
    assert refused(services, start(services), number, PASSWORD) == "invalid_credentials"
    (event_,) = events(services)[before:]
    assert event_.data == {
        "method": "password",
        "ip": IP,
        "known": True,
        "status": "locked",
    }
    with services.db.read_transaction() as db:
        assert account_of(db, number).failed_logins == LOCK_AFTER
    assert chain_ok(services)


def test_every_refusal_costs_one_argon2_verification(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "login_failures", NoThrottle())
    active, inactive = accounts(services, 2)
    with services.db.transaction() as db:
        account_of(db, inactive).status = AccountStatus.SUSPENDED
    verify = PasswordHasher.verify
    calls: list[str | None] = []

    def counted(self: PasswordHasher, stored: Any, given: str) -> bool:
        calls.append(stored)
        return verify(self, stored, given)

    monkeypatch.setattr(PasswordHasher, "verify", counted)
    unknown = matricule.make(date(1980, 5, 17), 99)
    for number, secret in [(unknown, PASSWORD), (active, "wrong"), (inactive, PASSWORD)]:
        calls.clear()
        assert refused(services, start(services), number, secret) == "invalid_credentials"
        assert len(calls) == 1
        assert (calls[0] is None) == (number == unknown)  # the dummy hash, for the same work


def test_a_previous_session_is_reauthenticated_or_ended(services: Services) -> None:
    anne, jean = accounts(services, 2)
    first = password(services, start(services), anne, PASSWORD)
    again = password(services, start(services), anne, PASSWORD, cookie=first.opened.cookie)
    assert again.opened.session.id == first.opened.session.id
    assert again.opened.cookie != first.opened.cookie
    assert events(services)[-2].tag == EventTag.SESSION_REAUTHENTICATED
    other = password(services, start(services), jean, PASSWORD, cookie=again.opened.cookie)
    assert other.opened.session.id != first.opened.session.id
    assert [e.tag for e in events(services)[-3:]] == [
        EventTag.SESSION_ENDED,
        EventTag.SESSION_OPENED,
        EventTag.LOGIN_SUCCEEDED,
    ]
    with services.db.read_transaction() as db:
        ended = db.get_one(ProviderSession, first.opened.session.id)
        assert ended.ended_at is not None and ended.end_reason == "another person signed in"
    assert chain_ok(services)


@pytest.mark.postgresql_only
def test_concurrent_wrong_passwords_count_exactly(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account row is locked by the final write: concurrent failures are counted one by
    one, and the account locks once."""
    monkeypatch.setattr(services, "login_failures", NoThrottle())
    (number,) = accounts(services, 1)
    tries = LOCK_AFTER + 4
    flows = [start(services) for _ in range(tries)]
    barrier = threading.Barrier(tries)
    codes: list[str] = []

    def attempt(flow: tuple[str, str, str]) -> None:
        barrier.wait()
        codes.append(refused(services, flow, number, "wrong password"))

    threads = [threading.Thread(target=attempt, args=(flow,)) for flow in flows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == ["invalid_credentials"] * tries
    with services.db.read_transaction() as db:
        account = account_of(db, number)
    assert (account.failed_logins, account.status) == (tries, AccountStatus.LOCKED)
    tags = [e.tag for e in events(services)]
    assert tags.count(EventTag.ACCOUNT_LOCKED) == 1
    assert tags.count(EventTag.LOGIN_FAILED) == tries
    counts = sorted(e.data["failed_logins"] for e in events(services) if "failed_logins" in e.data)
    assert counts == list(range(1, tries + 1))
    assert chain_ok(services)


@pytest.mark.postgresql_only
def test_concurrent_right_and_wrong_passwords_keep_the_count(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A right password resets the count, a wrong one adds one, in the order they commit: read
    in the chain's order, every failure's count follows from the events before it."""
    monkeypatch.setattr(services, "login_failures", NoThrottle())
    (number,) = accounts(services, 1)
    secrets = [PASSWORD, "wrong password"] * 6
    flows = [start(services) for _ in secrets]
    barrier = threading.Barrier(len(secrets))
    codes: list[str] = []

    def attempt(flow: tuple[str, str, str], secret: str) -> None:
        barrier.wait()
        try:
            password(services, flow, number, secret)
            codes.append("signed in")
        except LoginError as error:
            codes.append(error.code)

    threads = [
        threading.Thread(target=attempt, args=pair) for pair in zip(flows, secrets, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == sorted(["signed in", "invalid_credentials"] * 6)
    count = 0
    for event_ in events(services):
        if event_.tag == EventTag.LOGIN_SUCCEEDED:
            count = 0
        elif event_.tag == EventTag.LOGIN_FAILED:
            count += 1
            assert event_.data["failed_logins"] == count
    with services.db.read_transaction() as db:
        assert account_of(db, number).failed_logins == count
    assert chain_ok(services)
