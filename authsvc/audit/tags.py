"""The audit vocabulary: ``area:subject:action``, one value per kind of security event."""

from __future__ import annotations

from enum import StrEnum


class EventTag(StrEnum):
    # configuration
    CONFIG_WARNING = "config:setting:warning"
    # directory
    DIRECTORY_IMPORTED = "directory:file:imported"
    DIRECTORY_LEFT = "directory:professional:left"
    DIRECTORY_RETURNED = "directory:professional:returned"
    # accounts
    ACCOUNT_CREATED = "account:account:created"
    ACCOUNT_SUSPENDED = "account:account:suspended"
    # activation letters
    LETTER_ISSUED = "activation:letter:issued"
    LETTER_SUPERSEDED = "activation:letter:superseded"
    LETTER_LOCKED = "activation:letter:locked"
    # the activation flow
    ACTIVATION_CODE_WRONG = "activation:code:wrong"
    ACTIVATION_STARTED = "activation:flow:started"
    ACTIVATION_EMAIL_CODE_SENT = "activation:email:code_sent"
    ACTIVATION_EMAIL_VERIFIED = "activation:email:verified"
    ACTIVATION_PASSWORD_CHOSEN = "activation:password:chosen"
    ACTIVATION_CARD_REFUSED = "activation:card:refused"
    ACTIVATION_COMPLETED = "activation:flow:completed"
    ACTIVATION_START_REFUSED = "activation:start:refused"
    ACTIVATION_REFUSED = "activation:flow:refused"
    # smartcards
    CARD_CERTIFICATE_REVOKED = "smartcard:certificate:revoked"
    # relying services and keys
    CLIENT_REGISTERED = "oidc:client:registered"
    KEY_CREATED = "oidc:key:created"
    # sign-in and sessions
    LOGIN_SUCCEEDED = "login:attempt:succeeded"
    LOGIN_FAILED = "login:attempt:failed"
    ACCOUNT_LOCKED = "account:account:locked"
    SESSION_OPENED = "session:session:opened"
    SESSION_STEPPED_UP = "session:session:stepped_up"
    SESSION_REAUTHENTICATED = "session:session:reauthenticated"
    SESSION_ENDED = "session:session:ended"
    # tokens
    TOKENS_ISSUED = "oidc:token:issued"
    TOKEN_REVOKED = "oidc:token:revoked"
    CODE_REPLAYED = "oidc:code:replayed"
    REFRESH_REUSED = "oidc:refresh:reused"
    # the helpdesk
    STAFF_GRANTED = "helpdesk:staff:granted"
    HELPDESK_CARD_REVOKED = "helpdesk:card:revoked"
    HELPDESK_SESSIONS_ENDED = "helpdesk:sessions:ended"
    HELPDESK_ACCOUNT_LOCKED = "helpdesk:account:locked"
    HELPDESK_ACCOUNT_UNLOCKED = "helpdesk:account:unlocked"
    # what staff read (a professional's record, the trail itself) and who was refused the console
    HELPDESK_PROFESSIONAL_VIEWED = "helpdesk:professional:viewed"
    HELPDESK_AUDIT_EXPORTED = "helpdesk:audit:exported"
    HELPDESK_ACCESS_REFUSED = "helpdesk:access:refused"
    # the account pages (a session's own end is session:session:ended, actor account:…)
    ACCOUNT_PASSWORD_CHANGED = "account:password:changed"
    ACCOUNT_PASSWORD_CHANGE_REFUSED = "account:password:change_refused"
