"""Settings: INTERFACE §1 defaults, and one line naming the variable for every invalid value."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from authsvc.config import load_settings
from authsvc.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"AUTHSVC_INSTANCE_DIR": str(tmp_path / "inst")}


def test_defaults(base: dict[str, str], tmp_path: Path) -> None:
    s = load_settings(base)
    inst = (tmp_path / "inst").resolve()
    assert s.instance_dir == inst
    assert s.database_url == f"sqlite:///{inst / 'authsvc.sqlite3'}"
    assert s.issuer == "http://127.0.0.1:5000"
    assert s.issuer_origin == "http://127.0.0.1:5000"
    assert s.smtp_host is None
    assert s.mail_from == "no-reply@localhost"
    assert s.card_trust_anchors == inst / "demo-ca" / "trust-anchors.pem"
    assert s.card_revocation == "crl"
    assert s.crl_max_age == 300
    assert s.ratelimit_storage == "memory://"
    assert s.session_max_age == 43200
    assert s.full_level_max_age == 28800
    assert s.pkcs11_module.endswith("libsofthsm2.so")


def test_secret_key_is_generated_once_and_kept_private(
    base: dict[str, str], tmp_path: Path
) -> None:
    first = load_settings(base).secret_key
    second = load_settings(base).secret_key
    assert first == second
    assert len(first) >= 32
    mode = (tmp_path / "inst" / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_explicit_values(base: dict[str, str]) -> None:
    s = load_settings(
        {
            **base,
            "AUTHSVC_ISSUER": "https://id.example.lu/",
            "AUTHSVC_DATABASE_URL": "postgresql://u@db/authsvc",
            "AUTHSVC_SMTP_HOST": "mail.example.lu",
            "AUTHSVC_SMTP_PORT": "587",
            "AUTHSVC_CARD_REVOCATION": "crl+ocsp",
            "AUTHSVC_SECRET_KEY": "k" * 40,
            "AUTHSVC_RATELIMIT_STORAGE": "redis://127.0.0.1:6379/0",
        }
    )
    assert s.issuer == "https://id.example.lu"
    assert s.is_https
    assert s.database_url == "postgresql+psycopg://u@db/authsvc"
    assert (s.smtp_host, s.smtp_port) == ("mail.example.lu", 587)
    assert s.card_revocation == "crl+ocsp"
    assert s.secret_key == b"k" * 40


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ISSUER", "ftp://x", "absolute http(s) URL"),
        ("ISSUER", "http://id.example.lu", "must use https"),
        ("ISSUER", "https://id.example.lu/?a=1", "query"),
        ("DATABASE_URL", "mysql://x/y", "sqlite or postgresql"),
        ("DATABASE_URL", "not a url", "not a SQLAlchemy database URL"),
        ("DATABASE_URL", "sqlite://", "in-memory"),
        ("SECRET_KEY", "short", "at least 32 characters"),
        ("SMTP_PORT", "70000", "between 1 and 65535"),
        ("MAIL_FROM", "nobody", "email address"),
        ("CARD_REVOCATION", "sometimes", "crl, ocsp, crl+ocsp, none"),
        ("CRL_MAX_AGE", "-1", "must not be negative"),
        ("CRL_MAX_AGE", "5m", "whole number"),
        ("RATELIMIT_STORAGE", "memcached://x", "memory:// or redis://"),
        ("SESSION_MAX_AGE", "0", "greater than 0"),
        ("FULL_LEVEL_MAX_AGE", "eight hours", "whole number"),
    ],
)
def test_invalid_values_name_the_variable(
    base: dict[str, str], name: str, value: str, message: str
) -> None:
    env = {**base, f"AUTHSVC_{name}": value}
    if name == "SMTP_PORT":
        env["AUTHSVC_SMTP_HOST"] = "mail.example.lu"
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    text = str(info.value)
    assert text.startswith(f"AUTHSVC_{name}: ")
    assert message in text
    assert "\n" not in text


def test_smtp_port_without_host(base: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_SMTP_PORT: set, but AUTHSVC_SMTP_HOST is not"):
        load_settings({**base, "AUTHSVC_SMTP_PORT": "25"})


def test_instance_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="AUTHSVC_INSTANCE_DIR"):
        load_settings({"AUTHSVC_INSTANCE_DIR": str(f)})


def test_env_file_fills_in_what_the_environment_does_not_set(
    base: dict[str, str], tmp_path: Path
) -> None:
    env_file = tmp_path / "authsvc.env"
    env_file.write_text(
        "# comment\nAUTHSVC_CRL_MAX_AGE=60\nexport AUTHSVC_MAIL_FROM='ops@example.lu'\n"
        "AUTHSVC_SESSION_MAX_AGE=100\nOTHER=1\n"
    )
    s = load_settings({**base, "AUTHSVC_ENV_FILE": str(env_file), "AUTHSVC_SESSION_MAX_AGE": "200"})
    assert s.crl_max_age == 60
    assert s.mail_from == "ops@example.lu"
    assert s.session_max_age == 200  # the environment wins


def test_missing_env_file(base: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"AUTHSVC_ENV_FILE: .* does not exist"):
        load_settings({**base, "AUTHSVC_ENV_FILE": str(tmp_path / "nope.env")})
