"""The activation flow as an explicit state machine (PRODUCT "The activation journey").

::

    email_required --email--> email_verification_required --verify--> password_required
                              (email again: a new code, or another address)    |
                                                                            password
                                                                               v
    active <--smartcard-- smartcard_required (password again: another password)

The table :data:`TRANSITIONS` is the only place that says which step may follow which; every
service method asks it first (:func:`next_state`). The diagram is in ``docs/activation.md``.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    EMAIL_REQUIRED = "email_required"
    EMAIL_VERIFICATION_REQUIRED = "email_verification_required"
    PASSWORD_REQUIRED = "password_required"
    SMARTCARD_REQUIRED = "smartcard_required"
    ACTIVE = "active"


class Event(StrEnum):
    EMAIL = "email"
    VERIFY = "verify"
    PASSWORD = "password"
    SMARTCARD = "smartcard"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.EMAIL_REQUIRED, Event.EMAIL): State.EMAIL_VERIFICATION_REQUIRED,
    # a typo in the address, or the mail did not arrive: give it again, a new code is sent
    (State.EMAIL_VERIFICATION_REQUIRED, Event.EMAIL): State.EMAIL_VERIFICATION_REQUIRED,
    (State.EMAIL_VERIFICATION_REQUIRED, Event.VERIFY): State.PASSWORD_REQUIRED,
    (State.PASSWORD_REQUIRED, Event.PASSWORD): State.SMARTCARD_REQUIRED,
    # choosing another password before the card is presented
    (State.SMARTCARD_REQUIRED, Event.PASSWORD): State.SMARTCARD_REQUIRED,
    (State.SMARTCARD_REQUIRED, Event.SMARTCARD): State.ACTIVE,
}


def next_state(state: State, event: Event) -> State | None:
    """The state after ``event`` in ``state``, or None when the event is not allowed there."""
    return TRANSITIONS.get((state, event))
