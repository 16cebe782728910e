"""``AUTHSVC_METRICS`` and ``AUTHSVC_LOG_FORMAT``: defaults, values, one line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.config import load_settings
from authsvc.errors import ConfigError

from ..conftest import run_authsvc


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return {"AUTHSVC_INSTANCE_DIR": str(tmp_path / "inst"), "AUTHSVC_SECRET_KEY": "k" * 40}


def test_defaults(base: dict[str, str]) -> None:
    settings = load_settings(base)
    assert settings.metrics is False
    assert settings.log_format == "text"


@pytest.mark.parametrize(("raw", "expected"), [("on", True), ("OFF", False), (" On ", True)])
def test_metrics_on_or_off(base: dict[str, str], raw: str, expected: bool) -> None:
    assert load_settings({**base, "AUTHSVC_METRICS": raw}).metrics is expected


@pytest.mark.parametrize(("raw", "expected"), [("json", "json"), ("TEXT", "text")])
def test_log_format(base: dict[str, str], raw: str, expected: str) -> None:
    assert load_settings({**base, "AUTHSVC_LOG_FORMAT": raw}).log_format == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("METRICS", "yes", "AUTHSVC_METRICS: expected on or off, got 'yes'"),
        ("METRICS", "1", "AUTHSVC_METRICS: expected on or off, got '1'"),
        ("LOG_FORMAT", "xml", "AUTHSVC_LOG_FORMAT: expected text or json, got 'xml'"),
    ],
)
def test_a_bad_value_names_the_variable(
    base: dict[str, str], name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**base, f"AUTHSVC_{name}": value})
    assert str(info.value) == message


def test_serve_stops_with_one_line(env: dict[str, str]) -> None:
    result = run_authsvc("serve", env={**env, "AUTHSVC_METRICS": "enabled"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: AUTHSVC_METRICS: expected on or off, got 'enabled'"
    ]


def test_a_multiprocess_folder_that_does_not_exist_stops_the_start(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder"
    result = run_authsvc("serve", env={**env, "PROMETHEUS_MULTIPROC_DIR": str(missing)})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: PROMETHEUS_MULTIPROC_DIR: '{missing}' is not a folder")
