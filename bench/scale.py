"""Benchmark: sign-in and token-exchange latency with 10,000 and with 1,000,000 accounts.

Not a test. PostgreSQL only. In one run it makes two fresh databases (dropped afterwards), fills
the first with ``--small`` professionals and as many active accounts, then the second with
``--large`` (PostgreSQL ``COPY`` for the directory, ``INSERT … SELECT`` for the accounts; valid
matricules from ``authsvc.matricule.make``; every account has the same Argon2id hash of one known
password, made by ``Services.passwords`` at the configured parameters), ``VACUUM ANALYZE`` both,
and then measures, one sample at a time, alternating between the two databases (so that the
machine's load changes hit both sizes alike):

- ``sign-in``: a password sign-in of a random account, through ``Login.password`` (the service
  behind ``POST /api/login/<flow>/password``, in this process; the flow made beforehand, untimed);
- ``code exchange``: ``POST /token`` (``grant_type=authorization_code`` + PKCE, client secret in
  Basic auth) through the Flask application (``create_app(...).test_client()``), with a code
  inserted beforehand as ``bench/oidc_vs_peer.py`` does, bound to the session the sign-in opened;
- ``argon2``: one Argon2id verification with argon2-cffi alone (what a sign-in cannot avoid).

and prints p50 and p99 of each at both sizes and the ratios of PERFORMANCE.md:
p99(large) ÷ p99(small) ≤ 1.2 (and the same for p50, for information).

    .venv/bin/python bench/scale.py [--small 10000] [--large 1000000] [--samples 300]
        [--results bench/results]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argon2
import sqlalchemy as sa

from authsvc import create_app, matricule
from authsvc.app import Services
from authsvc.oidc.clients import register
from authsvc.oidc.models import AuthorizationCode
from authsvc.security.secrets import Purpose
from authsvc.sessions.models import ProviderSession
from bench.directory_import import fresh_database
from bench.report import emit
from bench.signin import PASSWORD, Attempt, flows, load, machine_busy, make_services, sign_in

TARGET = 1.2
REDIRECT_URI = "http://127.0.0.1/cb"
SCOPE = "openid profile email professional"
FIRST_BIRTH = date(1930, 1, 1)
DAYS = 365 * 70  # birth dates spread over 70 years; the sequence number takes the rest


def matricule_at(i: int) -> str:
    """The ``i``-th professional's matricule: distinct for every i < DAYS × 1000, and valid."""
    return matricule.make(FIRST_BIRTH + timedelta(days=i % DAYS), i // DAYS)


def populate(svc: Services, n: int, password_hash: str, say: Callable[[str], None]) -> float:
    """``n`` directory entries and as many active accounts: the seconds it took."""
    start = time.perf_counter()
    now = datetime.now(UTC).isoformat()
    raw = svc.db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            chunk = 100_000
            for first in range(0, n, chunk):
                lines = "".join(
                    f"{matricule_at(i)}\tAnne\tMuller\tdoctor\t123456-78\tlisted\t{now}\t{now}\n"
                    for i in range(first, min(n, first + chunk))
                )
                with cur.copy(
                    "COPY professionals (matricule, given_name, family_name, profession,"
                    " provider_code, status, created_at, updated_at) FROM STDIN"
                ) as copy:
                    copy.write(lines)
                say(f"  {min(n, first + chunk):,} professionals")
            cur.execute(
                "INSERT INTO accounts (id, professional_id, subject, status, email,"
                " email_verified_at, password_hash, created_at, activated_at, status_changed_at,"
                " failed_logins)"
                " SELECT gen_random_uuid(), p.id, md5(p.id::text || random()::text)"
                " || left(md5(random()::text), 11), 'active', p.matricule || '@example.lu',"
                " %(now)s, %(hash)s, %(now)s, %(now)s, %(now)s, 0 FROM professionals p",
                {"now": now, "hash": password_hash},
            )
            say(f"  {cur.rowcount:,} accounts")
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        conn.autocommit = False
    finally:
        raw.close()
    return time.perf_counter() - start


@dataclass
class Side:
    """One database of one size, with its services, its Flask app and its client."""

    name: str
    size: int
    svc: Services
    client: Any = None
    client_id: str = ""
    auth: str = ""
    verifier: str = ""
    challenge: str = ""

    def prepare(self) -> None:
        svc = self.svc
        with svc.db.transaction() as db:
            reg = register(
                db,
                name="bench",
                redirect_uris=[REDIRECT_URI],
                hasher=svc.hasher,
                actor="bench",
                clock=svc.clock,
            )
        self.client_id = reg.client_id
        secret = f"{reg.client_id}:{reg.client_secret}".encode()
        self.auth = "Basic " + base64.b64encode(secret).decode()
        self.verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(self.verifier.encode()).digest()
        self.challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        svc.keys.ready()
        app = create_app(svc.settings, SERVICES=svc)
        self.client = app.test_client()

    def attempts(self, rng: random.Random, n: int) -> list[Attempt]:
        return flows(self.svc, [matricule_at(rng.randrange(self.size)) for _ in range(n)])

    def codes(self, sessions: list[ProviderSession]) -> list[str]:
        """One code per session, as ``save_authorization_code`` writes it (living 30 minutes)."""
        svc = self.svc
        now = svc.clock.now()
        codes = [secrets.token_urlsafe(36) for _ in sessions]
        with svc.db.transaction() as db:
            for session in sessions:
                svc.sessions.add_client(db, db.get_one(ProviderSession, session.id), self.client_id)
            db.execute(
                sa.insert(AuthorizationCode),
                [
                    {
                        "code_hash": svc.hasher.hash(Purpose.AUTHORIZATION_CODE, code),
                        "client_id": self.client_id,
                        "account_id": s.account_id,
                        "session_id": s.id,
                        "redirect_uri": REDIRECT_URI,
                        "scope": SCOPE,
                        "nonce": secrets.token_urlsafe(12),
                        "code_challenge": self.challenge,
                        "code_challenge_method": "S256",
                        "acr": "http://eidas.europa.eu/LoA/low",
                        "amr": list(s.amr),
                        "auth_time": s.auth_time,
                        "created_at": now,
                        "expires_at": now + timedelta(minutes=30),
                    }
                    for code, s in zip(codes, sessions, strict=True)
                ],
            )
        return codes

    def exchange(self, code: str) -> None:
        response = self.client.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": self.verifier,
            },
            headers={"Authorization": self.auth},
        )
        body = response.get_json(silent=True) or {}
        if response.status_code != 200 or not {"id_token", "access_token"} <= set(body):
            raise RuntimeError(f"code exchange: {response.status_code} {body}")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(statistics.median(values), 2), "p99": round(q[98], 2)}


def measure(sides: list[Side], samples: int, warmup: int, seed: int) -> dict[str, dict[str, Any]]:
    rng = random.Random(seed)
    raw = argon2.PasswordHasher(
        time_cost=sides[0].svc.argon2.time_cost,
        memory_cost=sides[0].svc.argon2.memory_cost,
        parallelism=sides[0].svc.argon2.parallelism,
        type=argon2.Type.ID,
    )
    stored = sides[0].svc.passwords.hash(PASSWORD)
    lat: dict[str, dict[str, list[float]]] = {
        s.name: {"sign-in": [], "code exchange": [], "argon2": []} for s in sides
    }
    attempts = {s.name: s.attempts(rng, samples + warmup) for s in sides}
    opened: dict[str, list[ProviderSession]] = {s.name: [] for s in sides}
    for i in range(samples + warmup):  # alternate: small, large, small, large …
        for s in sides:
            result: list[Any] = []
            ms = timed(lambda s=s: result.append(sign_in(s.svc.login, attempts[s.name][i])))
            opened[s.name].append(result[0].opened.session)
            argon_ms = timed(lambda: raw.verify(stored, PASSWORD))
            if i >= warmup:
                lat[s.name]["sign-in"].append(ms)
                lat[s.name]["argon2"].append(argon_ms)
    codes = {s.name: s.codes(opened[s.name]) for s in sides}
    for i in range(samples + warmup):
        for s in sides:
            ms = timed(lambda s=s: s.exchange(codes[s.name][i]))
            if i >= warmup:
                lat[s.name]["code exchange"].append(ms)
    return {name: {k: percentiles(v) for k, v in d.items()} for name, d in lat.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=10_000, help="accounts (default: 10,000)")
    parser.add_argument(
        "--large", type=int, default=1_000_000, help="accounts (default: 1,000,000)"
    )
    parser.add_argument("--samples", type=int, default=300, help="samples of each, at each size")
    parser.add_argument("--warmup", type=int, default=20, help="samples first thrown away")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--results", type=Path, default=None, help="also write the JSON line to a file there"
    )
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, flush=True)

    report: dict[str, Any] = {
        "bench": "scale",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "accounts": {"small": args.small, "large": args.large},
        "samples": args.samples,
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="authsvc-bench-scale-")))
        sides: list[Side] = []
        for name, size in (("small", args.small), ("large", args.large)):
            database = stack.enter_context(fresh_database("postgresql"))
            svc = make_services(database.url, tmp / name)
            stack.callback(svc.close)
            say(f"{name}: {size:,} accounts in {database.url.rsplit('/', 1)[-1]}")
            seconds = populate(svc, size, svc.passwords.hash(PASSWORD), say)
            report[f"populate {name} s"] = round(seconds, 1)
            say(f"  populated in {seconds:.1f} s")
            side = Side(name, size, svc)
            side.prepare()
            sides.append(side)
        report["load_before"] = load()
        say(f"measuring (load {report['load_before']}) …")
        start, busy0, cpu0 = time.perf_counter(), machine_busy(), time.process_time()
        figures = measure(sides, args.samples, args.warmup, args.seed)
        wall = time.perf_counter() - start
        report["measure s"] = round(wall, 1)
        own = time.process_time() - cpu0
        report["other cores busy"] = round(max(0.0, machine_busy() - busy0 - own) / wall, 2)
        report["load_after"] = load()
    report |= figures
    ratios: dict[str, float] = {}
    print(
        f"\nscale, PostgreSQL, {args.samples} samples each (alternating sizes), "
        f"load {report['load_before']} -> {report['load_after']}, "
        f"{report['other cores busy']} cores busy with other work (PostgreSQL included)"
    )
    print(
        f"  {'ms':<16} {'p50 ' + f'{args.small:,}':>13} {'p50 ' + f'{args.large:,}':>15} "
        f"{'ratio':>6}   {'p99 ' + f'{args.small:,}':>13} {'p99 ' + f'{args.large:,}':>15} "
        f"{'ratio':>6}"
    )
    for what in ("sign-in", "code exchange", "argon2"):
        s, big = figures["small"][what], figures["large"][what]
        r50, r99 = big["p50"] / s["p50"], big["p99"] / s["p99"]
        ratios[f"{what} p50"], ratios[f"{what} p99"] = r50, r99
        print(
            f"  {what:<16} {s['p50']:>13.2f} {big['p50']:>15.2f} {r50:>6.2f}   "
            f"{s['p99']:>13.2f} {big['p99']:>15.2f} {r99:>6.2f}"
        )
    for what in ("sign-in", "code exchange"):
        verdict = "met" if ratios[f"{what} p99"] <= TARGET else "NOT met"
        print(f"  {what}: p99 ratio {ratios[f'{what} p99']:.2f} ({verdict})")
    print(f"  target (PERFORMANCE.md): p99({args.large:,}) ÷ p99({args.small:,}) ≤ {TARGET}\n")
    report |= {f"ratio {k}": round(v, 3) for k, v in ratios.items()}
    report["target"] = TARGET
    emit(report, "scale", args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
