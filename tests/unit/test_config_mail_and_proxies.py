"""AUTHSVC_SMTP_TLS, AUTHSVC_SMTP_USERNAME / AUTHSVC_SMTP_PASSWORD and AUTHSVC_TRUSTED_PROXIES:
defaults, values, and one line naming the variable for every invalid one."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.config import load_settings
from authsvc.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"AUTHSVC_INSTANCE_DIR": str(tmp_path / "inst"), "AUTHSVC_SECRET_KEY": "k" * 40}


def test_defaults(base: dict[str, str]) -> None:
    s = load_settings(base)
    assert s.smtp_tls == "opportunistic"
    assert s.smtp_username is None and s.smtp_password == ""
    assert s.trusted_proxies == 0


def test_values(base: dict[str, str]) -> None:
    s = load_settings(
        {
            **base,
            "AUTHSVC_SMTP_HOST": "mail.example.lu",
            "AUTHSVC_SMTP_TLS": "STARTTLS",
            "AUTHSVC_SMTP_USERNAME": "authsvc",
            "AUTHSVC_SMTP_PASSWORD": " with spaces ",
            "AUTHSVC_TRUSTED_PROXIES": "2",
        }
    )
    assert (s.smtp_tls, s.smtp_port) == ("starttls", 25)
    assert s.smtp_username == "authsvc"
    assert s.smtp_password == " with spaces "  # a secret is taken as it is
    assert s.trusted_proxies == 2
    assert "with spaces" not in repr(s)


def test_implicit_tls_defaults_to_port_465(base: dict[str, str]) -> None:
    tls = {**base, "AUTHSVC_SMTP_HOST": "mail.example.lu", "AUTHSVC_SMTP_TLS": "tls"}
    assert load_settings(tls).smtp_port == 465
    assert load_settings({**tls, "AUTHSVC_SMTP_PORT": "2465"}).smtp_port == 2465


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"AUTHSVC_SMTP_HOST": "m.example.lu", "AUTHSVC_SMTP_TLS": "ssl"},
            "AUTHSVC_SMTP_TLS: expected one of starttls, tls, opportunistic, got 'ssl'",
        ),
        ({"AUTHSVC_SMTP_TLS": "starttls"}, "AUTHSVC_SMTP_TLS: set, but AUTHSVC_SMTP_HOST is not"),
        (
            {"AUTHSVC_SMTP_HOST": "m.example.lu", "AUTHSVC_SMTP_USERNAME": "u"},
            "AUTHSVC_SMTP_USERNAME: set, but AUTHSVC_SMTP_PASSWORD is not",
        ),
        (
            {"AUTHSVC_SMTP_HOST": "m.example.lu", "AUTHSVC_SMTP_PASSWORD": "p4ss-w0rd"},
            "AUTHSVC_SMTP_PASSWORD: set, but AUTHSVC_SMTP_USERNAME is not",
        ),
        (
            {"AUTHSVC_SMTP_USERNAME": "u", "AUTHSVC_SMTP_PASSWORD": "p"},
            "AUTHSVC_SMTP_USERNAME: set, but AUTHSVC_SMTP_HOST is not",
        ),
        (
            {"AUTHSVC_TRUSTED_PROXIES": "one"},
            "AUTHSVC_TRUSTED_PROXIES: expected a whole number, got 'one'",
        ),
        (
            {"AUTHSVC_TRUSTED_PROXIES": "-1"},
            "AUTHSVC_TRUSTED_PROXIES: must not be negative, got -1",
        ),
        (
            {"AUTHSVC_TRUSTED_PROXIES": "50"},
            "AUTHSVC_TRUSTED_PROXIES: expected the number of proxies",
        ),
    ],
)
def test_invalid_values_name_the_variable(
    base: dict[str, str], values: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**base, **values})
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert "p4ss-w0rd" not in text  # a password is never echoed
