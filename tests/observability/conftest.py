"""Observability under test: an instance with ``AUTHSVC_METRICS=on``, the provider's people and
relying services (tests/oidc/conftest.py), and a scraper that reads ``/metrics`` as Prometheus
does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authsvc import logs
from authsvc.config import Settings, load_settings

from ..oidc.conftest import (  # noqa: F401 - fixtures
    anne,
    browser,
    directory,
    env,
    jean,
    new_client,
    rp,
    tokens,
)

Key = tuple[str, tuple[tuple[str, str], ...]]


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:  # noqa: F811 - env: tests/oidc's
    return load_settings({**env, "AUTHSVC_METRICS": "on"})


@pytest.fixture(autouse=True)
def _text_logs_afterwards() -> Iterator[None]:
    """A test may switch the logs to JSON: the next tests find them as they were."""
    yield
    logs.configure(None, "text")


def samples(text: str) -> dict[Key, float]:
    """The samples of a Prometheus text exposition, by (name, sorted labels)."""
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def key(name: str, **labels: str) -> Key:
    return (name, tuple(sorted(labels.items())))


class Scraper:
    """Reads ``/metrics`` like Prometheus (directly, no proxy headers) and tells what moved."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.text = ""
        self.before = self.scrape()

    def scrape(self) -> dict[Key, float]:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.data[:300]
        assert response.content_type.startswith("text/plain")
        self.text = response.get_data(as_text=True)
        return samples(self.text)

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get(key(name, **labels))

    def moved(self, name: str, **labels: str) -> float:
        """How much a sample grew since this scraper was made (a missing sample counts as 0)."""
        k = key(name, **labels)
        return self.scrape().get(k, 0.0) - self.before.get(k, 0.0)

    def mark(self) -> None:
        self.before = self.scrape()


@pytest.fixture
def scraper(app) -> Scraper:  # type: ignore[no-untyped-def]
    return Scraper(app.test_client())
