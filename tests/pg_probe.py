"""Does the PostgreSQL server of the test suite answer? (used by `make test`)

Exit 0 when it does; otherwise print why on stderr and exit 1. The server is the one the suite
uses: ``AUTHSVC_TEST_PG_ADMIN_URL`` (default: postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa

URL = os.environ.get(
    "AUTHSVC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

try:
    engine = sa.create_engine(URL, connect_args={"connect_timeout": 3})
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
except Exception as exc:
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    print(f"PostgreSQL at {sa.engine.make_url(URL).render_as_string()}: {reason}", file=sys.stderr)
    raise SystemExit(1) from None
