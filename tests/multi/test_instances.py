"""Three instances, one provider (the production issue's "multi-instance tests"): a code issued by
one is redeemed at another; a helpdesk revocation on one takes effect on all at once; the limits
are shared; the outbox workers of every instance deliver each mail and each logout exactly once,
also when the mail server and the relying service were down at first."""

from __future__ import annotations

import re
import secrets
import time
from collections import Counter
from datetime import date

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from authsvc.mail import messages
from authsvc.matricule import make
from authsvc.oidc.claims import ACR_HIGH
from authsvc.outbox.models import OutboxMessage
from authsvc.outbox.service import enqueue

from ..oidc.conftest import basic, claims_of, full_sign_in, pkce
from ..servers import wait_until
from .conftest import Cluster

pytestmark = pytest.mark.postgresql_only


def test_a_code_issued_by_one_instance_is_redeemed_by_another(cluster: Cluster) -> None:
    anne = cluster.person()
    rp = cluster.client()
    b = cluster.browser(cluster.a)  # signs in at A
    verifier, challenge = pkce()
    nonce = secrets.token_urlsafe(8)
    cb = b.sign_in(rp, anne, code_challenge=challenge, code_challenge_method="S256", nonce=nonce)
    # the relying service's back end reaches B
    token = cluster.tokens(cluster.b).exchange(rp, cb["code"], verifier)
    assert token.status_code == 200, (token.json, cluster.logs())
    body = token.json
    # the ID token verifies with the JWKS that C publishes
    keys = KeySet.import_key_set(cluster.c.client().get("/jwks.json").json)
    claims = jwt.decode(body["id_token"], keys, algorithms=["ES256"]).claims
    assert claims["nonce"] == nonce
    assert claims["sub"] == anne.subject
    # C answers userinfo and introspection, A refreshes, B refuses the code a second time
    assert cluster.tokens(cluster.c).userinfo(body["access_token"]).json["sub"] == anne.subject
    assert cluster.tokens(cluster.c).introspect(rp, body["access_token"])["active"] is True
    refreshed = cluster.tokens(cluster.a).refresh(rp, body["refresh_token"])
    assert refreshed.status_code == 200
    # a token revoked at B (RFC 7009) is inactive at C at once: looked up by jti, not cached
    revoked = cluster.b.client().post(
        "/revoke", data={"token": body["access_token"]}, headers=basic(rp)
    )
    assert revoked.status_code == 200
    assert cluster.tokens(cluster.c).introspect(rp, body["access_token"]) == {"active": False}
    assert cluster.tokens(cluster.a).userinfo(body["access_token"]).status_code == 401
    again = cluster.tokens(cluster.c).exchange(rp, cb["code"], verifier)
    assert again.json["error"] == "invalid_grant"
    # … and the code's replay revoked what it had issued, on every instance
    assert cluster.tokens(cluster.a).introspect(rp, refreshed.json["access_token"]) == {
        "active": False
    }


def test_a_helpdesk_revocation_on_one_instance_holds_on_all_at_once(cluster: Cluster) -> None:
    anne, jean = cluster.person(), cluster.person("Jean", "Schmit")
    cluster.receiver.start()
    try:
        dsp = cluster.client(name="DSP", backchannel_logout_uri=cluster.receiver.uri)
        console = cluster.client(
            name="Helpdesk tool", scopes=["helpdesk"], redirect_uris=["https://hd.example.test/cb"]
        )
        with cluster.services.db.transaction() as db:
            cluster.services.helpdesk.grant(db, jean.matricule, "helpdesk", actor="test")
        staff = full_sign_in(
            cluster.browser(cluster.c),
            console,
            jean,
            cluster.tokens(cluster.c),
            method="card",
            scope="openid helpdesk",
            acr_values=ACR_HIGH,
        )
        # Anne signs in with her card at B and at C (two sessions): each instance has now
        # checked her card against the CA's CRL, which it keeps in its cache
        tokens_b = full_sign_in(
            cluster.browser(cluster.b), dsp, anne, cluster.tokens(cluster.b), method="card"
        )
        tokens_c = full_sign_in(
            cluster.browser(cluster.c), dsp, anne, cluster.tokens(cluster.c), method="card"
        )

        revoked = cluster.a.client().post(
            f"/api/helpdesk/professionals/{anne.matricule}/revoke-card",
            json={"reason": "lost"},
            headers={"Authorization": f"Bearer {staff['access_token']}"},
        )
        assert revoked.status_code == 200, revoked.json
        assert revoked.json["sessions_ended"] == 2

        # at once, with no waiting, on every instance
        for instance in cluster.instances:
            rs = cluster.tokens(instance)
            for token in (tokens_b, tokens_c):
                assert rs.introspect(dsp, token["access_token"]) == {"active": False}, instance.name
                assert rs.userinfo(token["access_token"]).status_code == 401, instance.name
            b = cluster.browser(instance)
            _, challenge = pkce()
            flow = b.flow_of(
                b.authorize(dsp, code_challenge=challenge, code_challenge_method="S256")
            )
            refused = b.login_card(flow, anne.card)
            assert refused.status_code == 400, (instance.name, refused.json)
            assert refused.json["error"] == "invalid_card"
        for token in (tokens_b, tokens_c):
            assert cluster.tokens(cluster.a).refresh(dsp, token["refresh_token"]).json["error"] == (
                "invalid_grant"
            )

        # the relying service is told once per session, by whichever instance's outbox worker
        wait_until(lambda: len(cluster.receiver.tokens) >= 2, 20, "two back-channel logouts")
        time.sleep(3)  # every worker has polled again meanwhile: nothing more comes
        sids = [claims_of(t)["sid"] for t in cluster.receiver.tokens]
        assert len(sids) == 2 and len(set(sids)) == 2, sids
        assert {claims_of(t)["sub"] for t in cluster.receiver.tokens} == {anne.subject}
    finally:
        cluster.receiver.stop()
        cluster.receiver.tokens.clear()


def test_limits_are_shared_by_the_instances(cluster: Cluster) -> None:
    """activation start: 10 per minute per address, wherever the requests land; the back-off of
    a matricule (3 free failures, then a growing wait) counts the failures of every instance."""
    anne = cluster.person()

    def wrong(i: int) -> dict[str, str]:  # another matricule each time: the per-IP limit alone
        return {"activation_code": "AAAA-BBBB-CCCC-DDDD", "matricule": make(date(1950, 1, 2), i)}

    for i in range(10):
        response = cluster.instances[i % 3].client().post("/api/activation", json=wrong(i))
        assert response.status_code == 400, (i, response.json)
    for i, instance in enumerate(cluster.instances):
        limited = instance.client().post("/api/activation", json=wrong(10 + i))
        assert limited.status_code == 429, (instance.name, limited.json)
        assert int(limited.headers["Retry-After"]) > 0

    rp = cluster.client()
    b = cluster.browser(cluster.a)
    _, challenge = pkce()
    flow = b.flow_of(b.authorize(rp, code_challenge=challenge, code_challenge_method="S256"))
    for instance in (cluster.a, cluster.b, cluster.c, cluster.a):  # 3 free, the 4th imposes a wait
        b.client = b.client.at(instance.url)
        wrong_password = b.login_password(flow, anne, password="not her password at all")
        assert wrong_password.json["error"] == "invalid_credentials", instance.name
    for instance in (cluster.b, cluster.c):
        b.client = b.client.at(instance.url)
        waiting = b.login_password(flow, anne)  # even the right password waits
        assert waiting.status_code == 429, (instance.name, waiting.json)
        assert int(waiting.headers["Retry-After"]) > 0


def test_outbox_workers_of_all_instances_deliver_each_message_exactly_once(
    cluster: Cluster,
) -> None:
    """20 mails and 20 back-channel logouts, queued while the mail server and the relying service
    are down: every worker of every instance tries; later, each is delivered exactly once."""
    services = cluster.services
    tag = secrets.token_hex(4)
    cluster.smtp.stop()  # down; the receiver is not started yet: down too
    dsp = cluster.client(name="DSP", backchannel_logout_uri=cluster.receiver.uri)
    with services.db.transaction() as db:
        for i in range(20):
            enqueue(
                db,
                "mail",
                messages.verification_code(
                    to=f"p{i}.{tag}@example.lu", name="Anne Muller", code=f"{i:06d}", lang="fr"
                ),
                summary=f"code {i} {tag}",
                sealer=services.sealer,
            )
            enqueue(
                db,
                "backchannel_logout",
                {
                    "uri": cluster.receiver.uri,
                    "client_id": dsp.client_id,
                    "alg": "ES256",
                    "sub": f"sub-{i}",
                    "sid": f"sid-{tag}-{i}",
                },
                summary=f"logout {i} {tag}",
                sealer=services.sealer,
            )
    ours = OutboxMessage.summary.like(f"% {tag}")

    def attempted() -> bool:
        with services.db.read_transaction() as db:
            rows = db.scalars(select(OutboxMessage).where(ours)).all()
            return all(r.attempts >= 1 and r.claimed_until is None for r in rows)

    wait_until(attempted, 30, "every message tried once while the servers are down")
    with services.db.read_transaction() as db:
        assert not db.scalars(
            select(OutboxMessage).where(ours, OutboxMessage.delivered_at.is_not(None))
        ).all()

    cluster.smtp.start()
    cluster.receiver.start()
    try:
        # the next attempt is due in 15 s: bring it forward rather than wait
        with services.db.transaction() as db:
            db.execute(
                update(OutboxMessage).where(ours).values(next_attempt_at=services.clock.now())
            )

        def delivered() -> bool:
            with services.db.read_transaction() as db:
                rows = db.scalars(select(OutboxMessage).where(ours)).all()
                return len(rows) == 40 and all(r.delivered_at is not None for r in rows)

        wait_until(delivered, 30, f"40 messages delivered\n{cluster.logs()}")
        time.sleep(3)  # every worker polls again meanwhile: nothing is sent a second time
        mails = [m for m in cluster.smtp.inbox.messages if m["To"].endswith(f".{tag}@example.lu")]
        assert sorted(m["To"] for m in mails) == sorted(f"p{i}.{tag}@example.lu" for i in range(20))
        sids = [claims_of(t)["sid"] for t in cluster.receiver.tokens]
        assert sorted(sids) == sorted(f"sid-{tag}-{i}" for i in range(20))
        with services.db.read_transaction() as db:
            # tried while down (at least once), delivered at the next attempt
            assert min(r.attempts for r in db.scalars(select(OutboxMessage).where(ours))) >= 2
        # the instances' own logs agree: each message delivered once, by one process
        with services.db.read_transaction() as db:
            ids = set(db.scalars(select(OutboxMessage.id).where(ours)))
        lines = re.findall(r"outbox \w+ (\d+) delivered", cluster.logs(None))
        counts = Counter(int(n) for n in lines if int(n) in ids)
        assert set(counts) == ids and set(counts.values()) == {1}
    finally:
        cluster.receiver.stop()
        cluster.receiver.tokens.clear()
