"""Fault tests: the provider with one of the things it depends on down. Each test brings its own
dedicated server when it stops one: the machine's shared PostgreSQL and Redis are never stopped.

- PostgreSQL restarted under load: test_postgresql_restart.py (a cluster of its own);
- Redis down or hung: test_redis_down.py (a redis-server of its own);
- the card authority's CRL server down: test_crl_down.py;
- the mail server and a relying service's back-channel endpoint down, delivered later: where the
  outbox is tested — tests/outbox/test_outbox.py, tests/activation/test_mail_down.py,
  tests/oidc/test_logout.py — and, with the workers of several instances, tests/multi/.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..oidc.conftest import (  # noqa: F401 - fixtures re-exported
    anne,
    browser,
    directory,
    env,
    jean,
    new_client,
    rp,
    tokens,
)
from ..servers import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` of the test's own (killed and started again by the test)."""
    try:
        server = RedisServer()
    except RuntimeError as exc:
        pytest.skip(f"{exc}: the Redis fault tests need it (Debian: apt-get install redis-server)")
    try:
        yield server.start()
    finally:
        server.destroy()
