"""The agent's application in-process (Flask test client), real SoftHSM2 cards, a frozen clock.

What a subprocess cannot show: expiry (the clock moves), a card whose PIN blocks (SoftHSM2 never
blocks: the PKCS#11 answers of a real card are played through :meth:`CardReader._login`), and the
agent's own bookkeeping (nothing is created for an untrusted origin).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pkcs11
import pytest
from flask import Flask
from flask.testing import FlaskClient

from authsvc.cardagent.app import create_app, valid_nonce
from authsvc.cardagent.card import CardReader
from authsvc.cardagent.config import AgentSettings, load_agent_settings
from authsvc.clock import FrozenClock
from softhsm.testca import Card, SoftHSM

from .conftest import TRUSTED, PinPage, Reply, new_nonce
from .webeid import verify_token

PORT = 5480
HOST = f"127.0.0.1:{PORT}"
OWN = f"http://{HOST}"


@pytest.fixture
def settings(cards: SoftHSM) -> AgentSettings:
    return load_agent_settings({}, port=PORT)


@pytest.fixture
def reader(settings: AgentSettings) -> CardReader:
    return CardReader(settings.pkcs11_module)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(settings: AgentSettings, reader: CardReader, clock: FrozenClock) -> Flask:
    return create_app(settings, reader, clock=clock)


class Browser:
    """The trusted page's fetch() calls and the person on the PIN page, through a test client."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def _reply(self, response: Any) -> Reply:
        return Reply(
            response.status_code, {k.lower(): v for k, v in response.headers}, response.data
        )

    def start(self, nonce: str, origin: str = TRUSTED) -> Reply:
        return self._reply(
            self.client.post(
                "/v1/authenticate",
                json={"nonce": nonce},
                headers={"Origin": origin, "Host": HOST},
            )
        )

    def result(self, request_id: str, origin: str = TRUSTED) -> Reply:
        return self._reply(
            self.client.get(
                f"/v1/authenticate/{request_id}", headers={"Origin": origin, "Host": HOST}
            )
        )

    def page(self, request_id: str) -> PinPage:
        return PinPage.parse(
            self._reply(self.client.get(f"/pin/{request_id}", headers={"Host": HOST}))
        )

    def submit(self, request_id: str, page: PinPage, pin: str, card: str | None = None) -> PinPage:
        form = {
            "csrf_token": page.csrf_token or "",
            "card": card or (page.card_ids[0] if page.card_ids else ""),
            "pin": pin,
            "action": "sign",
        }
        response = self.client.post(
            f"/pin/{request_id}",
            data=form,
            headers={"Origin": OWN, "Host": HOST, "Sec-Fetch-Site": "same-origin"},
        )
        return PinPage.parse(self._reply(response))


@pytest.fixture
def browser(app: Flask) -> Browser:
    return Browser(app.test_client())


# --- expiry ---------------------------------------------------------------------------------------


def test_a_request_expires_after_five_minutes(
    browser: Browser, clock: FrozenClock, issue: Callable[..., Card]
) -> None:
    card = issue()
    request_id = browser.start(new_nonce()).json["request_id"]
    page = browser.page(request_id)
    clock.advance(minutes=4, seconds=59)
    assert browser.result(request_id).json["status"] == "pending"
    clock.advance(seconds=1)
    late = browser.submit(request_id, page, card.user_pin)
    assert late.state == "expired"
    assert "expired" in late.messages
    result = browser.result(request_id).json
    assert result["status"] == "failed"
    assert result["error"] == "expired"
    assert browser.result(request_id).status == 404  # handed out once


def test_an_expired_request_is_reported_to_the_page_that_polls(
    browser: Browser, clock: FrozenClock, issue: Callable[..., Card]
) -> None:
    issue()
    request_id = browser.start(new_nonce()).json["request_id"]
    clock.advance(minutes=5)
    assert browser.result(request_id).json["error"] == "expired"


def test_results_not_collected_are_forgotten(
    browser: Browser, app: Flask, clock: FrozenClock, issue: Callable[..., Card]
) -> None:
    card = issue()
    request_id = browser.start(new_nonce()).json["request_id"]
    assert browser.submit(request_id, browser.page(request_id), card.user_pin).state == "done"
    store = app.extensions["cardagent"]["store"]
    assert len(store) == 1
    clock.advance(minutes=10, seconds=1)
    browser.start(new_nonce())  # any later request sweeps
    assert browser.result(request_id).status == 404
    assert len(store) == 1


def test_expiry_is_configurable(
    cards: SoftHSM, reader: CardReader, clock: FrozenClock, issue: Callable[..., Card]
) -> None:
    import datetime as dt

    issue()
    settings = load_agent_settings({}, port=PORT, request_lifetime=dt.timedelta(seconds=30))
    browser = Browser(create_app(settings, reader, clock=clock).test_client())
    started = browser.start(new_nonce())
    clock.advance(seconds=30)
    assert browser.result(started.json["request_id"]).json["error"] == "expired"


# --- a card that blocks its PIN -----------------------------------------------------------------


class BlockingCard:
    """Plays a real card's PKCS#11 answers to C_Login: 3 wrong PINs, then CKR_PIN_LOCKED."""

    def __init__(self, reader: CardReader, right_pin: str, retries: int = 3) -> None:
        self.reader = reader
        self.right_pin = right_pin
        self.left = retries
        self.real_login = reader._login

    @contextmanager
    def login(self, token: Any, pin: Any) -> Iterator[Any]:
        if self.left == 0:
            raise pkcs11.PinLocked()
        if pin != self.right_pin:
            self.left -= 1
            raise pkcs11.PinIncorrect()
        self.left = 3
        with self.real_login(token, pin) as session:
            yield session


def test_pin_blocked_after_the_cards_retries(
    browser: Browser,
    reader: CardReader,
    issue: Callable[..., Card],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = issue()
    fake = BlockingCard(reader, card.user_pin)
    monkeypatch.setattr(reader, "_login", fake.login)
    request_id = browser.start(new_nonce()).json["request_id"]
    page = browser.page(request_id)
    for _ in range(3):
        page = browser.submit(request_id, page, "000000")
        assert "wrong_pin" in page.messages
        assert browser.result(request_id).json["last_error"] == "wrong_pin"
    blocked = browser.submit(request_id, page, card.user_pin)  # too late: the card is blocked
    assert blocked.state == "pin_blocked"
    assert "pin_blocked" in blocked.messages
    assert "blocked" in blocked.reply.text
    assert blocked.csrf_token is None  # no form any more
    result = browser.result(request_id).json
    assert result["status"] == "failed"
    assert result["error"] == "pin_blocked"
    assert result["error_description"]


def _with_pin_state(reader: CardReader, monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    """The token's flags say ``state`` (what a real card reports in CK_TOKEN_INFO)."""
    scan = reader._scan

    def scan_with_state() -> list[tuple[Any, Any]]:
        return [(dataclasses.replace(info, pin_state=state), token) for info, token in scan()]

    monkeypatch.setattr(reader, "_scan", scan_with_state)


def test_a_card_already_blocked(
    browser: Browser,
    reader: CardReader,
    issue: Callable[..., Card],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = issue()
    request_id = browser.start(new_nonce()).json["request_id"]
    page = browser.page(request_id)
    _with_pin_state(reader, monkeypatch, "locked")
    # the card was blocked meanwhile (elsewhere): the PIN is not even tried
    blocked = browser.submit(request_id, page, card.user_pin)
    assert blocked.state == "pin_blocked"
    assert browser.result(request_id).json["error"] == "pin_blocked"
    # and a new request for a blocked card is refused at once
    refused = browser.start(new_nonce())
    assert refused.status == 409
    assert refused.json["error"] == "pin_blocked"


def test_final_try_warning(
    browser: Browser,
    reader: CardReader,
    issue: Callable[..., Card],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issue()
    request_id = browser.start(new_nonce()).json["request_id"]
    _with_pin_state(reader, monkeypatch, "final_try")
    page = browser.page(request_id)
    assert "final_try" in page.messages
    assert "one more wrong PIN" in page.reply.text


def test_a_blocked_card_among_others_cannot_be_chosen(
    browser: Browser,
    reader: CardReader,
    issue: Callable[..., Card],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocked_card = issue(given_name="Blocked")
    good = issue(given_name="Good")
    scan = reader._scan

    def scan_one_locked() -> list[tuple[Any, Any]]:
        return [
            (
                dataclasses.replace(info, pin_state="locked")
                if info.label == blocked_card.label
                else info,
                token,
            )
            for info, token in scan()
        ]

    monkeypatch.setattr(reader, "_scan", scan_one_locked)
    nonce = new_nonce()
    request_id = browser.start(nonce).json["request_id"]
    page = browser.page(request_id)
    assert len(page.card_ids) == 2
    assert len(page.disabled_card_ids) == 1
    usable = next(c for c in page.card_ids if c not in page.disabled_card_ids)
    assert browser.submit(request_id, page, good.user_pin, card=usable).state == "done"
    token = browser.result(request_id).json["auth_token"]
    assert verify_token(token, TRUSTED, nonce) == good.certificate


# --- bookkeeping ----------------------------------------------------------------------------------


def test_nothing_is_created_for_an_untrusted_origin(
    browser: Browser, app: Flask, issue: Callable[..., Card]
) -> None:
    issue()
    assert browser.start(new_nonce(), origin="https://evil.example").status == 403
    assert len(app.extensions["cardagent"]["store"]) == 0


def test_open_requests_are_bounded(browser: Browser, issue: Callable[..., Card]) -> None:
    issue()
    for _ in range(32):
        assert browser.start(new_nonce()).status == 202
    refused = browser.start(new_nonce())
    assert refused.status == 429
    assert refused.json["error"] == "too_many_requests"
    assert refused.header("Retry-After")


def test_a_double_submission_signs_once(
    browser: Browser,
    reader: CardReader,
    issue: Callable[..., Card],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = issue()
    calls = []
    authenticate = reader.authenticate

    def counting(*args: Any, **kwargs: Any) -> dict[str, str]:
        calls.append(1)
        return authenticate(*args, **kwargs)

    monkeypatch.setattr(reader, "authenticate", counting)
    request_id = browser.start(new_nonce()).json["request_id"]
    page = browser.page(request_id)
    results: list[PinPage] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(browser.submit(request_id, page, card.user_pin))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.state for r in results] == ["done"] * 4
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (new_nonce(), True),
        (new_nonce().rstrip("="), True),
        ("A" * 43 + "=", True),
        ("-_" * 22, True),  # base64url
        ("A" * 42, False),  # 31 bytes
        ("c2hvcnQ=", False),
        ("A" * 200, False),
        ("A" * 43 + "!", False),
        (None, False),
        (["x"], False),
    ],
)
def test_nonce_validation(value: object, ok: bool) -> None:
    assert valid_nonce(value) is ok


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 3000 + "]" * 3000,  # fits in 8 KiB, too deep for a recursive parser
        '{"nonce":' + "[" * 3500 + "]" * 3500 + "}",
        '{"a":' * 1300 + "1" + "}" * 1300,
        "[" * 40 + "]" * 40,
    ],
)
def test_deeply_nested_json_is_a_400(
    browser: Browser, issue: Callable[..., Card], body: str
) -> None:
    issue()
    response = browser.client.post(
        "/v1/authenticate",
        data=body,
        content_type="application/json",
        headers={"Origin": TRUSTED, "Host": HOST},
    )
    assert response.status_code == 400, response.data[:200]
    assert response.json["error"] == "invalid_request"
