"""The settings of a deployment of several instances: the limits' key prefix and the database pool
(docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.config import load_settings
from authsvc.errors import ConfigError


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"AUTHSVC_INSTANCE_DIR": str(tmp_path / "inst")}


def test_defaults(base: dict[str, str]) -> None:
    s = load_settings(base)
    assert (s.ratelimit_prefix, s.db_pool_size, s.db_max_overflow) == ("authsvc", 5, 10)


def test_values(base: dict[str, str]) -> None:
    s = load_settings(
        {
            **base,
            "AUTHSVC_RATELIMIT_PREFIX": "authsvc-prod:eu",
            "AUTHSVC_DB_POOL_SIZE": "9",
            "AUTHSVC_DB_MAX_OVERFLOW": "0",
        }
    )
    assert (s.ratelimit_prefix, s.db_pool_size, s.db_max_overflow) == ("authsvc-prod:eu", 9, 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RATELIMIT_PREFIX", "a b", "letters, digits"),
        ("RATELIMIT_PREFIX", "x" * 65, "at most 64"),
        ("DB_POOL_SIZE", "0", "greater than 0"),
        ("DB_POOL_SIZE", "many", "whole number"),
        ("DB_MAX_OVERFLOW", "-1", "must not be negative"),
    ],
)
def test_invalid_values_name_the_variable(
    base: dict[str, str], name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**base, f"AUTHSVC_{name}": value})
    assert str(info.value).startswith(f"AUTHSVC_{name}: ")
    assert message in str(info.value)


def test_the_pool_settings_reach_the_engine(base: dict[str, str]) -> None:
    from authsvc.app import Services

    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # never connected to
    env = {**base, "AUTHSVC_DATABASE_URL": url, "AUTHSVC_SECRET_KEY": "k" * 40}
    services = Services.from_settings(
        load_settings({**env, "AUTHSVC_DB_POOL_SIZE": "3", "AUTHSVC_DB_MAX_OVERFLOW": "2"})
    )
    try:
        pool = services.db.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 2  # type: ignore[attr-defined]
    finally:
        services.close()
