"""Smartcard challenges on the database: 32 random bytes, bound to a flow, 5 minutes, single use."""

from __future__ import annotations

import base64
import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from authsvc.clock import FrozenClock
from authsvc.db import Database
from authsvc.pki.challenges import (
    CHALLENGE_LIFETIME,
    consume_challenge,
    issue_challenge,
    purge_challenges,
)
from authsvc.pki.errors import CardRefused
from authsvc.pki.models import SmartcardChallenge

ORIGIN = "http://127.0.0.1:5000"
FLOW = "flow-" + "a" * 40


def consume_refused(db: Database, flow_id: str, clock: FrozenClock, reason: str) -> None:
    with pytest.raises(CardRefused) as info, db.transaction() as s:
        consume_challenge(s, flow_id, clock)
    assert info.value.reason == reason, info.value.detail


def test_a_challenge_is_32_random_bytes_bound_to_origin_for_5_minutes(
    db: Database, clock: FrozenClock
) -> None:
    with db.transaction() as s:
        challenge = issue_challenge(s, FLOW, ORIGIN, clock)
    assert len(challenge.nonce) == 44
    assert len(base64.b64decode(challenge.nonce, validate=True)) == 32
    assert challenge.origin == ORIGIN
    assert challenge.expires_at == clock.now() + dt.timedelta(minutes=5)
    assert dt.timedelta(minutes=5) == CHALLENGE_LIFETIME
    assert challenge.to_dict() == {
        "nonce": challenge.nonce,
        "origin": ORIGIN,
        "expires_at": challenge.expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    with db.transaction() as s:
        nonces = {issue_challenge(s, f"flow-{i}", ORIGIN, clock).nonce for i in range(50)}
    assert len(nonces) == 50


def test_consuming_returns_the_challenge_once(db: Database, clock: FrozenClock) -> None:
    with db.transaction() as s:
        issued = issue_challenge(s, FLOW, ORIGIN, clock)
    with db.transaction() as s:
        consumed = consume_challenge(s, FLOW, clock)
    assert consumed == issued
    consume_refused(db, FLOW, clock, "challenge_used")
    clock.advance(minutes=10)
    consume_refused(db, FLOW, clock, "challenge_used")  # used stays used, also after expiry


def test_a_challenge_expires_after_5_minutes(db: Database, clock: FrozenClock) -> None:
    with db.transaction() as s:
        issue_challenge(s, FLOW, ORIGIN, clock)
    clock.advance(minutes=5)
    consume_refused(db, FLOW, clock, "challenge_expired")


def test_a_challenge_is_usable_until_just_before_it_expires(
    db: Database, clock: FrozenClock
) -> None:
    with db.transaction() as s:
        issue_challenge(s, FLOW, ORIGIN, clock)
    clock.advance(minutes=4, seconds=59)
    with db.transaction() as s:
        consume_challenge(s, FLOW, clock)


def test_a_flow_without_a_challenge_is_refused(db: Database, clock: FrozenClock) -> None:
    consume_refused(db, "never-issued", clock, "challenge_used")
    consume_refused(db, "", clock, "challenge_used")
    consume_refused(db, "x" * 500, clock, "challenge_used")


def test_a_challenge_is_bound_to_its_flow(db: Database, clock: FrozenClock) -> None:
    with db.transaction() as s:
        a = issue_challenge(s, "flow-a", ORIGIN, clock)
        b = issue_challenge(s, "flow-b", ORIGIN, clock)
    with db.transaction() as s:
        assert consume_challenge(s, "flow-b", clock) == b
    with db.transaction() as s:
        assert consume_challenge(s, "flow-a", clock) == a


def test_a_new_challenge_makes_the_earlier_one_unusable(db: Database, clock: FrozenClock) -> None:
    with db.transaction() as s:
        first = issue_challenge(s, FLOW, ORIGIN, clock)
    clock.advance(seconds=1)
    with db.transaction() as s:
        second = issue_challenge(s, FLOW, ORIGIN, clock)
    assert first.nonce != second.nonce
    with db.transaction() as s:
        assert consume_challenge(s, FLOW, clock) == second
    consume_refused(db, FLOW, clock, "challenge_used")
    with db.transaction() as s:
        open_ = s.scalar(
            select(func.count())
            .select_from(SmartcardChallenge)
            .where(SmartcardChallenge.consumed_at.is_(None))
        )
    assert open_ == 0  # the first was removed, the second consumed


def test_a_challenge_can_be_issued_again_after_use(db: Database, clock: FrozenClock) -> None:
    """A failed card attempt consumed the challenge; the page asks for a new one."""
    with db.transaction() as s:
        issue_challenge(s, FLOW, ORIGIN, clock)
    with db.transaction() as s:
        consume_challenge(s, FLOW, clock)
    with db.transaction() as s:
        again = issue_challenge(s, FLOW, ORIGIN, clock)
    with db.transaction() as s:
        assert consume_challenge(s, FLOW, clock) == again


def test_only_the_newest_challenge_counts_even_when_two_were_left_open(
    db: Database, clock: FrozenClock
) -> None:
    """Two requests issuing at once may both commit: the older is never consumable."""
    with db.transaction() as s:
        now = clock.now()
        for nonce in ("older", "newer"):
            s.add(
                SmartcardChallenge(
                    flow_id=FLOW,
                    nonce=nonce,
                    origin=ORIGIN,
                    created_at=now,
                    expires_at=now + CHALLENGE_LIFETIME,
                )
            )
    with db.transaction() as s:
        assert consume_challenge(s, FLOW, clock).nonce == "newer"
    consume_refused(db, FLOW, clock, "challenge_used")


def test_a_consumption_rolled_back_by_the_caller_is_undone(
    db: Database, clock: FrozenClock
) -> None:
    """Why SmartcardVerifier consumes in a transaction of its own (see its tests)."""
    with db.transaction() as s:
        issue_challenge(s, FLOW, ORIGIN, clock)
    with pytest.raises(RuntimeError), db.transaction() as s:
        consume_challenge(s, FLOW, clock)
        raise RuntimeError("the caller failed after consuming")
    with db.transaction() as s:
        consume_challenge(s, FLOW, clock)


def test_purge_removes_long_expired_challenges(db: Database, clock: FrozenClock) -> None:
    with db.transaction() as s:
        issue_challenge(s, "old", ORIGIN, clock)
    clock.advance(days=2)
    with db.transaction() as s:
        issue_challenge(s, "recent", ORIGIN, clock)
    with db.transaction() as s:
        assert purge_challenges(s, clock) == 1
    with db.transaction() as s:
        assert s.scalars(select(SmartcardChallenge.flow_id)).all() == ["recent"]


def test_a_flow_id_must_be_a_short_string(db: Database, clock: FrozenClock) -> None:
    with pytest.raises(ValueError, match="flow id"), db.transaction() as s:
        issue_challenge(s, "x" * 65, ORIGIN, clock)


@pytest.mark.postgresql_only
def test_racing_consumers_exactly_one_wins(db: Database, clock: FrozenClock) -> None:
    """SECURITY "Smartcard": single use — also when requests race on PostgreSQL."""
    for round_ in range(5):
        flow = f"race-{round_}"
        with db.transaction() as s:
            issue_challenge(s, flow, ORIGIN, clock)
        barrier = threading.Barrier(8)
        wins: list[str] = []
        reasons: list[str] = []
        errors: list[BaseException] = []

        def consume(
            flow: str = flow,
            barrier: threading.Barrier = barrier,
            wins: list[str] = wins,
            reasons: list[str] = reasons,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                with db.transaction() as s:
                    wins.append(consume_challenge(s, flow, clock).nonce)
            except CardRefused as exc:
                reasons.append(exc.reason)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=consume) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(wins) == 1
        assert reasons == ["challenge_used"] * 7


@pytest.mark.postgresql_only
def test_a_consumer_waiting_on_the_winners_lock_loses(db: Database, clock: FrozenClock) -> None:
    """The loser blocks on the row lock, then sees consumed_at set: the WHERE is re-checked."""
    with db.transaction() as s:
        issue_challenge(s, FLOW, ORIGIN, clock)
    winner = db.session()
    winner.begin()
    consume_challenge(winner, FLOW, clock)  # holds the row lock, not committed yet
    result: list[str] = []

    def loser() -> None:
        try:
            with db.transaction() as s:
                consume_challenge(s, FLOW, clock)
            result.append("won")
        except CardRefused as exc:
            result.append(exc.reason)

    thread = threading.Thread(target=loser)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive()  # waiting for the winner's lock
    winner.commit()
    winner.close()
    thread.join(timeout=10)
    assert result == ["challenge_used"]
