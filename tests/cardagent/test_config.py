"""The card agent's settings: trusted origins, the PKCS#11 module, one line naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.cardagent.config import load_agent_settings, parse_origin
from authsvc.errors import ConfigError


@pytest.fixture
def module(tmp_path: Path) -> str:
    path = tmp_path / "module.so"
    path.write_bytes(b"")
    return str(path)


def test_default_is_the_default_issuers_origin(module: str) -> None:
    s = load_agent_settings({"AUTHSVC_PKCS11_MODULE": module})
    assert s.trusted_origins == ("http://127.0.0.1:5000",)
    assert s.port == 5480
    assert s.pkcs11_module == module
    assert s.hosts == ("127.0.0.1:5480", "localhost:5480")
    assert s.request_lifetime.total_seconds() == 300


def test_default_follows_the_issuer(module: str) -> None:
    s = load_agent_settings(
        {"AUTHSVC_PKCS11_MODULE": module, "AUTHSVC_ISSUER": "https://Auth.eSante.example/realm/"}
    )
    assert s.trusted_origins == ("https://auth.esante.example",)


def test_options_and_environment_are_joined(module: str) -> None:
    s = load_agent_settings(
        {
            "AUTHSVC_PKCS11_MODULE": module,
            "AUTHSVC_CARD_AGENT_TRUSTED_ORIGINS": " https://a.example , https://b.example:8443,",
            "AUTHSVC_ISSUER": "https://ignored.example",
        },
        trust_origins=["https://c.example:443", "https://a.example"],
        port=6000,
    )
    assert s.trusted_origins == ("https://c.example", "https://a.example", "https://b.example:8443")
    assert s.hosts == ("127.0.0.1:6000", "localhost:6000")


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://auth.example", "https://auth.example"),
        ("https://auth.example/", "https://auth.example"),
        ("HTTPS://AUTH.EXAMPLE:443", "https://auth.example"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(raw: str, origin: str) -> None:
    assert parse_origin(raw) == origin


@pytest.mark.parametrize(
    "raw",
    [
        "auth.example",
        "https://auth.example/login",
        "https://auth.example?x=1",
        "https://user@auth.example",
        "http://auth.example",  # http only on loopback
        "ftp://auth.example",
        "https://auth.example:99999",
        "null",
    ],
)
def test_bad_origins_are_refused(raw: str, module: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_origin(raw)
    with pytest.raises(ConfigError) as option:
        load_agent_settings({"AUTHSVC_PKCS11_MODULE": module}, trust_origins=[raw])
    assert option.value.description.startswith("--trust-origin: ")
    with pytest.raises(ConfigError) as variable:
        load_agent_settings(
            {"AUTHSVC_PKCS11_MODULE": module, "AUTHSVC_CARD_AGENT_TRUSTED_ORIGINS": raw}
        )
    assert variable.value.description.startswith("AUTHSVC_CARD_AGENT_TRUSTED_ORIGINS: ")


def test_bad_issuer_is_named(module: str) -> None:
    with pytest.raises(ConfigError) as failed:
        load_agent_settings({"AUTHSVC_PKCS11_MODULE": module, "AUTHSVC_ISSUER": "http://x.example"})
    assert failed.value.description.startswith("AUTHSVC_ISSUER: ")


def test_missing_module_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as failed:
        load_agent_settings({"AUTHSVC_PKCS11_MODULE": str(tmp_path / "nope.so")})
    assert (
        failed.value.description == f"AUTHSVC_PKCS11_MODULE: {tmp_path / 'nope.so'} does not exist"
    )


def test_no_secret_and_no_instance_folder_are_made(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    load_agent_settings({"AUTHSVC_PKCS11_MODULE": module, "AUTHSVC_INSTANCE_DIR": "inst"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module.so"]
