"""A rolling upgrade (docs/deployment.md): the new release migrates the database first; the
instances of the release before stay healthy on the newer schema, and an instance never serves a
schema older than it needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from authsvc import migrate


@pytest.fixture
def stamp(db) -> Iterator[Callable[[str], None]]:  # type: ignore[no-untyped-def]
    """Pretend the schema is at another revision (put back at the end, whatever happens)."""

    def set_revision(revision: str | None) -> None:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})

    yield set_revision
    set_revision(migrate.head_revision())


def test_an_instance_stays_healthy_on_a_newer_schema(client, stamp) -> None:  # type: ignore[no-untyped-def]
    head = migrate.head_revision()
    assert client.get("/healthz").json == {"status": "ok", "database": "ok", "schema": head}
    stamp("9999_from_the_next_release")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["schema"] == "9999_from_the_next_release"
    assert response.json["expected"] == head


def test_an_instance_is_unhealthy_on_an_older_schema(client, stamp) -> None:  # type: ignore[no-untyped-def]
    stamp("0001")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["schema"] == "0001"
    assert response.json["expected"] == migrate.head_revision()
