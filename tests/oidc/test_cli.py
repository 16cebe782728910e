"""`authsvc clients create` and `authsvc keys rotate` (INTERFACE §2)."""

from __future__ import annotations

import json
from pathlib import Path

from joserfc.jwk import ECKey
from sqlalchemy import select

from authsvc.oidc.models import Client, SigningKey

from ..conftest import CLI


def test_clients_create_confidential(cli: CLI, db) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "clients",
        "create",
        "--name",
        "Shared care record",
        "--redirect-uri",
        "https://dsp.example.lu/cb",
        "--redirect-uri",
        "https://dsp.example.lu/cb2",
        "--post-logout-redirect-uri",
        "https://dsp.example.lu/",
        "--backchannel-logout-uri",
        "https://dsp.example.lu/bcl",
        "--require-acr",
        "high",
        "--subject-type",
        "pairwise",
        "--scope",
        "matricule",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    out = result.json
    assert set(out) == {"client_id", "client_secret"}
    assert len(out["client_secret"]) >= 40
    with db.transaction() as s:
        client = s.get(Client, out["client_id"])
        assert client.secret_hash and out["client_secret"] not in client.secret_hash
        assert client.redirect_uris == ["https://dsp.example.lu/cb", "https://dsp.example.lu/cb2"]
        assert (client.require_acr, client.subject_type, client.extra_scopes) == (
            "high",
            "pairwise",
            ["matricule"],
        )


def test_clients_create_public_and_service(cli: CLI) -> None:
    public = cli(
        "clients",
        "create",
        "--name",
        "App",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--public",
        "--json",
    )
    assert public.json["client_secret"] is None
    service = cli(
        "clients", "create", "--name", "Connector", "--grant", "client_credentials", "--json"
    )
    assert service.exit_code == 0, service.stderr
    assert service.json["client_secret"]


def test_clients_create_private_key_jwt(cli: CLI, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256", private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    ok = cli(
        "clients",
        "create",
        "--name",
        "RP",
        "--redirect-uri",
        "https://rp.example.lu/cb",
        "--auth-method",
        "private_key_jwt",
        "--jwks",
        str(jwks),
        "--json",
    )
    assert ok.exit_code == 0, ok.stderr
    assert ok.json["client_secret"] is None
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    leaked = cli(
        "clients",
        "create",
        "--name",
        "RP",
        "--redirect-uri",
        "https://rp.example.lu/cb",
        "--auth-method",
        "private_key_jwt",
        "--jwks",
        str(jwks),
    )
    assert leaked.exit_code == 1
    assert "private key" in leaked.last_error_line


def test_clients_create_refuses_bad_input(cli: CLI) -> None:
    cases = [
        (["--name", "X"], "redirect-uri"),
        (["--name", "X", "--redirect-uri", "http://rp.example.lu/cb"], "https"),
        (["--name", "X", "--redirect-uri", "https://rp.example.lu/cb#frag"], "fragment"),
        (["--name", "X", "--redirect-uri", "not a uri"], "absolute"),
        (
            ["--name", "X", "--redirect-uri", "https://rp.example.lu/cb", "--scope", "admin"],
            "unknown scope",
        ),
        (
            [
                "--name",
                "X",
                "--redirect-uri",
                "https://rp.example.lu/cb",
                "--auth-method",
                "private_key_jwt",
            ],
            "jwks",
        ),
        (
            [
                "--name",
                "X",
                "--redirect-uri",
                "https://rp.example.lu/cb",
                "--require-acr",
                "medium",
            ],
            "Invalid value",
        ),
    ]
    for args, message in cases:
        result = cli("clients", "create", *args)
        assert result.exit_code != 0, args
        assert result.last_error_line.startswith("error: "), args
        assert message.lower() in result.last_error_line.lower(), (args, result.last_error_line)


def test_keys_rotate(cli: CLI, services, db) -> None:  # type: ignore[no-untyped-def]
    services.keys.ready()
    result = cli("keys", "rotate")
    assert result.exit_code == 0, result.stderr
    with db.transaction() as s:
        keys = s.scalars(select(SigningKey)).all()
    assert len(keys) == 4
    assert {k.alg for k in keys if k.retired_at is None} == {"ES256", "RS256"}
    assert all(k.expires_at is not None for k in keys if k.retired_at is not None)
    for key in keys:  # encrypted at rest: no PEM in the database
        assert key.private_key is not None
        assert b"PRIVATE KEY" not in key.private_key
