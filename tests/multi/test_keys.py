"""Signing keys across instances: a key made by ``authsvc keys rotate`` is accepted at once by
every instance (tokens it signed verify, userinfo and introspection answer), and instances that
pick it up sign with it."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from authsvc import create_app
from authsvc.app import Services
from authsvc.oidc.models import SigningKey

from ..oidc.conftest import Browser, full_sign_in, header_of
from .conftest import Cluster, authsvc

pytestmark = pytest.mark.postgresql_only


def current_kids(cluster: Cluster) -> set[str]:
    with cluster.services.db.read_transaction() as db:
        return set(db.scalars(select(SigningKey.kid).where(SigningKey.retired_at.is_(None))))


def published(cluster: Cluster, instance: object) -> set[str]:
    body = instance.client().get("/jwks.json").json  # type: ignore[attr-defined]
    return {k["kid"] for k in body["keys"]}


def jwks_with(instance: object, token: str) -> KeySet:
    """The instance's JWKS once it names the token's kid: asked again (each time on a new
    connection, which may reach another worker) until, at the latest, every worker's periodic
    reload."""
    import time

    from authsvc.oidc.keys import RELOAD_EVERY

    kid = header_of(token)["kid"]
    deadline = time.monotonic() + RELOAD_EVERY + 5
    while True:
        body = instance.client().get("/jwks.json").json  # type: ignore[attr-defined]
        if kid in {k["kid"] for k in body["keys"]} or time.monotonic() > deadline:
            return KeySet.import_key_set(body)
        time.sleep(0.5)


def test_a_key_from_keys_rotate_is_accepted_by_every_instance(cluster: Cluster) -> None:
    anne = cluster.person()
    rp = cluster.client()
    before = current_kids(cluster)
    for instance in cluster.instances:  # each has loaded the keys of before
        assert before <= published(cluster, instance)

    rotated = authsvc("keys", "rotate", env=cluster.env)
    assert rotated.returncode == 0, rotated.stderr
    new = current_kids(cluster)
    assert new.isdisjoint(before) and len(new) == 2

    # a new key signs once it has been published long enough for every instance to serve it
    # (PUBLISH_LEAD); here, an in-process instance whose clock is that much later …
    from datetime import UTC, datetime

    from authsvc.clock import FrozenClock
    from authsvc.oidc.keys import PUBLISH_LEAD

    later = Services.from_settings(
        cluster.services.settings, clock=FrozenClock(datetime.now(UTC) + PUBLISH_LEAD)
    )
    try:
        _signed_by_later(cluster, later, anne, rp, before, new)
    finally:
        later.close()
    assert before <= published(cluster, cluster.c)  # the retired keys stay published


def _signed_by_later(  # type: ignore[no-untyped-def]
    cluster: Cluster, later: Services, anne, rp, before: set[str], new: set[str]
) -> None:
    later.keys.reload()
    app = create_app(later.settings, SERVICES=later, AUTHSVC_OUTBOX_WORKER=False)
    local = Browser(app.test_client(), cluster.softhsm)
    from ..oidc.conftest import Tokens

    token = full_sign_in(local, rp, anne, Tokens(app.test_client()))
    assert header_of(token["access_token"])["kid"] in new
    assert header_of(token["id_token"])["kid"] in new

    # … and every other instance accepts those tokens at once (an unknown kid makes it reload)
    for instance in cluster.instances:
        rs = cluster.tokens(instance)
        assert rs.userinfo(token["access_token"]).json["sub"] == anne.subject, instance.name
        assert rs.introspect(rp, token["access_token"])["active"] is True, instance.name
        # its JWKS: a worker of a multi-worker instance that was not asked about the new kid
        # loads it at its next reload, within RELOAD_EVERY (PUBLISH_LEAD is longer: by the time
        # a key signs for real, every worker publishes it); here the new key signed at once
        assert jwt.decode(
            token["id_token"], jwks_with(instance, token["id_token"]), algorithms=["ES256"]
        ).claims["sub"]
    # meanwhile the others go on signing with the previous key (still current for them until
    # the handover), and every kid they use is one everybody publishes
    refreshed = cluster.tokens(cluster.b).refresh(rp, token["refresh_token"])
    kid = header_of(refreshed.json["access_token"])["kid"]
    assert kid in before | new
    assert all(kid in published(cluster, i) for i in cluster.instances)


def test_every_instance_publishes_a_new_key_before_any_signs_with_it(cluster: Cluster) -> None:
    anne = cluster.person()
    rp = cluster.client()
    for instance in cluster.instances:
        published(cluster, instance)  # loaded just now: the next reload is 30 s away
    cluster.services.keys.rotate(actor="test")  # what `authsvc keys rotate` runs
    app = create_app(
        cluster.services.settings, SERVICES=cluster.services, AUTHSVC_OUTBOX_WORKER=False
    )
    from ..oidc.conftest import Tokens

    token = full_sign_in(
        Browser(app.test_client(), cluster.softhsm), rp, anne, Tokens(app.test_client())
    )
    kid = header_of(token["id_token"])["kid"]
    for instance in cluster.instances:
        assert kid in published(cluster, instance), instance.name


def test_instances_making_the_first_keys_at_once_make_one_per_algorithm(cluster: Cluster) -> None:
    import threading

    from sqlalchemy import delete

    from authsvc.config import load_settings

    with cluster.services.db.transaction() as db:
        db.execute(delete(SigningKey))  # a fresh deployment: no key yet
    starting = [Services.from_settings(load_settings(cluster.env)) for _ in range(3)]
    barrier = threading.Barrier(len(starting))

    def first_request(services: Services) -> None:
        barrier.wait()
        services.keys.ensure()

    try:
        threads = [threading.Thread(target=first_request, args=(s,)) for s in starting]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for services in starting:
            services.close()
    assert len(current_kids(cluster)) == 2  # one ES256, one RS256
