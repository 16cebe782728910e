"""Benchmark: password sign-ins per second, against the Argon2id limit.

Not a test. In one run, on this machine, it measures (each the best of ``--repeat`` rounds):

- ``argon2``: Argon2id verifications/s of one thread, with argon2-cffi directly, at the parameters
  authsvc uses (``Services.argon2``, by default ``authsvc.security.passwords.OWASP``: 19 MiB,
  t = 2, p = 1), of a hash made by authsvc's own ``PasswordHasher``; and the same from
  ``--threads`` threads at once (what the cores really give, for information);
- ``sign-in`` (SQLite, PostgreSQL): complete password sign-ins through ``Login.password`` — the
  service the login API (``POST /api/login/<flow>/password``) calls, in this process: the flow
  and its CSRF token checked, the per-matricule throttle read, the account looked up, the Argon2id
  verification, the account row locked, a provider session opened, the flow marked, the audit
  events appended, committed — from ``--threads`` threads (default: the number of cores), each
  signing one active account of its own in again and again; and from one thread, to tell the
  time a sign-in spends outside Argon2.

Each account is prepared as in production: a directory entry, an activation letter, then active
with the Argon2id hash of its password made by ``Services.passwords`` (what activation stores).
The sign-in flows are made beforehand (``Login.start``, as the authorization endpoint does) and
are not timed.

The target of PERFORMANCE.md: sign-ins/s ÷ (cores × Argon2id verifications/s of one thread)
≥ 0.9 — nothing but Argon2 costs. For information it also prints sign-ins/s ÷ Argon2id
verifications/s from ``--threads`` threads (what the cores give Argon2 alone here, memory
bandwidth and other load included), and the CPU time of one sign-in outside Argon2 (this process;
on PostgreSQL also the CPU its backends spent, when the server is local and /proc tells).

    .venv/bin/python bench/signin.py [--per-thread 60] [--repeat 3] [--db sqlite,postgresql]
        [--threads N] [--results bench/results]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argon2

import authsvc.models  # noqa: F401 - every table known to the metadata
from authsvc import matricule
from authsvc.accounts.models import Account, AccountStatus
from authsvc.activation import letters
from authsvc.app import Services
from authsvc.config import load_settings
from authsvc.directory.importer import import_directory
from authsvc.login.service import Login
from authsvc.oidc.claims import ACR_LOW
from bench.directory_import import fresh_database
from bench.oidc_vs_peer import cpu_seconds, machine_busy
from bench.report import emit

PASSWORD = "correct horse battery staple 42"
ISSUER = "http://127.0.0.1:5000"
TARGET = 0.9
#: the CPU seconds of the last ``in_threads`` run (this process, all its threads)
CPU = [0.0]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def backend_cpu(svc: Services) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends serving this database, read from /proc
    (:func:`bench.oidc_vs_peer.cpu_seconds`); None on SQLite, or when none is found (the server is
    not local, or its processes not readable)."""
    if svc.db.dialect != "postgresql":
        return None
    seconds = cpu_seconds(-1, svc.db.engine.url.database)[0]  # no process group: backends only
    return seconds or None


def make_services(url: str, instance: Path) -> Services:
    """authsvc's services for the database at ``url``, as ``create_app`` builds them."""
    settings = load_settings(
        {
            "AUTHSVC_INSTANCE_DIR": str(instance),
            "AUTHSVC_SECRET_KEY": secrets.token_urlsafe(48),
            "AUTHSVC_DATABASE_URL": url,
            "AUTHSVC_ISSUER": ISSUER,
            "AUTHSVC_DB_POOL_SIZE": "20",
        }
    )
    return Services.from_settings(settings)


def active_accounts(svc: Services, n: int, first: int = 1) -> list[str]:
    """``n`` active accounts (directory entry, letter, activated with ``PASSWORD``): matricules."""
    numbers = [matricule.make(date(1970, 1, 1), first + i) for i in range(n)]
    csv = "matricule,given_name,family_name,profession,provider_code\n" + "".join(
        f"{number},Anne,Muller,doctor,123456-78\n" for number in numbers
    )
    with svc.db.transaction() as db:
        import_directory(db, csv.encode(), actor="bench", clock=svc.clock)
    password_hash = svc.passwords.hash(PASSWORD)  # what activation stores
    with svc.db.transaction() as db:
        for number in numbers:
            letters.issue(db, number, hasher=svc.hasher, actor="bench", clock=svc.clock)
        db.flush()
        for number in numbers:
            account = db.query(Account).join(Account.professional).filter_by(matricule=number).one()
            now = svc.clock.now()
            account.status = AccountStatus.ACTIVE
            account.password_hash = password_hash
            account.email = f"{number}@example.lu"
            account.email_verified_at = now
            account.activated_at = now
            account.status_changed_at = now
    return numbers


@dataclass(frozen=True)
class Attempt:
    """A sign-in ready to be sent: its flow, the browser's binding cookie, the matricule."""

    flow_id: str
    binding: str
    csrf: str
    number: str


def flows(svc: Services, numbers: list[str]) -> list[Attempt]:
    """One fresh sign-in flow per matricule, as the authorization endpoint starts them."""
    out = []
    with svc.db.transaction() as db:
        for number in numbers:
            started = svc.login.start(
                db,
                client_id="bench",
                request={"client_id": "bench", "response_type": "code", "scope": "openid"},
                required_acr=ACR_LOW,
                login_hint=None,
                lang="en",
            )
            out.append(Attempt(started.flow.id, started.binding, started.flow.csrf_token, number))
    return out


def sign_in(login: Login, attempt: Attempt, password: str = PASSWORD) -> Any:
    """One password sign-in, exactly as ``POST /api/login/<flow>/password`` calls it."""
    return login.password(
        attempt.flow_id,
        attempt.binding,
        attempt.csrf,
        attempt.number,
        password,
        previous_cookie=None,
        ip="127.0.0.1",
        user_agent="bench",
    )


def in_threads(jobs: list[list[Callable[[], object]]]) -> float:
    """Run each list of calls in a thread of its own, all started together: the seconds taken
    (and, in ``CPU[0]``, the CPU seconds this process spent meanwhile, all threads)."""
    barrier = threading.Barrier(len(jobs) + 1)
    errors: list[BaseException] = []

    def work(calls: list[Callable[[], object]]) -> None:
        barrier.wait()
        try:
            for call in calls:
                call()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(calls,)) for calls in jobs]
    for t in threads:
        t.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    CPU[0] = time.process_time() - cpu
    if errors:
        raise errors[0]
    return elapsed


def argon2_rates(
    svc: Services, threads: int, per_thread: int, repeat: int
) -> tuple[dict[str, float], float]:
    """argon2-cffi alone, authsvc's parameters: verifications/s of 1 and of ``threads`` threads."""
    p = svc.argon2
    raw = argon2.PasswordHasher(
        time_cost=p.time_cost,
        memory_cost=p.memory_cost,
        parallelism=p.parallelism,
        type=argon2.Type.ID,
    )
    stored = svc.passwords.hash(PASSWORD)
    raw.verify(stored, PASSWORD)
    one = many = 0.0
    cpu_ms = float("inf")
    for _ in range(repeat):
        one = max(
            one, per_thread / in_threads([[lambda: raw.verify(stored, PASSWORD)] * per_thread])
        )
        cpu_ms = min(cpu_ms, 1000 * CPU[0] / per_thread)
        jobs = [[lambda: raw.verify(stored, PASSWORD)] * per_thread for _ in range(threads)]
        many = max(many, threads * per_thread / in_threads(jobs))
    return {"argon2 1 thread": one, f"argon2 {threads} threads": many}, cpu_ms


def signin_rates(
    svc: Services, numbers: list[str], per_thread: int, repeat: int
) -> tuple[float, float, float, float | None]:
    """Sign-ins/s from one thread per account (``len(numbers)`` threads), and from one thread;
    the CPU milliseconds per sign-in from one thread of this process and (PostgreSQL, when
    :func:`backend_cpu` can tell) of the database's backends."""
    login = svc.login
    sign_in(login, flows(svc, numbers[:1])[0])  # warm: caches, pool, statements
    many = one = 0.0
    cpu_ms = float("inf")
    backend_ms: float | None = None
    for _ in range(repeat):
        attempts = flows(svc, [n for n in numbers for _ in range(per_thread)])
        jobs = [[lambda a=a: sign_in(login, a) for a in attempts if a.number == n] for n in numbers]
        many = max(many, len(attempts) / in_threads(jobs))
        attempts = flows(svc, numbers[:1] * per_thread)
        backend0 = backend_cpu(svc)
        one = max(one, per_thread / in_threads([[lambda a=a: sign_in(login, a) for a in attempts]]))
        backend1 = backend_cpu(svc)
        if 1000 * CPU[0] / per_thread < cpu_ms:
            cpu_ms = 1000 * CPU[0] / per_thread
            if backend0 is not None and backend1 is not None:
                backend_ms = 1000 * (backend1 - backend0) / per_thread
    return many, one, cpu_ms, backend_ms


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=cores(), help="concurrent sign-ins (default: the cores)"
    )
    parser.add_argument(
        "--per-thread", type=int, default=60, help="sign-ins per thread in a round (default: 60)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument(
        "--results", type=Path, default=None, help="also write the JSON line to a file there"
    )
    args = parser.parse_args()
    n = cores()
    report: dict[str, Any] = {
        "bench": "signin",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": n,
        "threads": args.threads,
        "load_before": load(),
    }
    results: dict[str, float] = {}
    busy0, cpu0, wall0 = machine_busy(), time.process_time(), time.perf_counter()
    per_op: dict[str, float] = {}  # wall milliseconds per sign-in, one thread
    cpu_op: dict[str, float] = {}  # CPU milliseconds of this process per operation, one thread
    backend_op: dict[str, float] = {}  # CPU milliseconds of PostgreSQL's backends per sign-in
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-signin-") as tmp:
        for kind in args.db.split(","):
            try:
                with fresh_database(kind) as database:
                    svc = make_services(database.url, Path(tmp) / kind)
                    try:
                        report["argon2"] = {
                            "time_cost": svc.argon2.time_cost,
                            "memory_cost_kib": svc.argon2.memory_cost,
                            "parallelism": svc.argon2.parallelism,
                        }
                        numbers = active_accounts(svc, args.threads)
                        many, one, cpu, backend = signin_rates(
                            svc, numbers, args.per_thread, args.repeat
                        )
                        results[f"sign-in {kind}, {args.threads} threads"] = many
                        per_op[kind] = 1000 / one
                        cpu_op[kind] = cpu
                        if backend is not None:
                            backend_op[kind] = backend
                        # Argon2 alone, right after, in the same conditions
                        rates, cpu = argon2_rates(svc, args.threads, args.per_thread, args.repeat)
                        for name, value in rates.items():
                            results[name] = max(results.get(name, 0.0), value)
                        cpu_op["argon2"] = min(cpu_op.get("argon2", cpu), cpu)
                    finally:
                        svc.close()
            except Exception as exc:
                print(f"{kind}: skipped ({exc.__class__.__name__}: {exc})", file=sys.stderr)
    report["load_after"] = load()
    wall = time.perf_counter() - wall0
    own = time.process_time() - cpu0
    # cores kept busy by everything else than this process (PostgreSQL's backends included)
    report["other cores busy"] = round(max(0.0, machine_busy() - busy0 - own) / wall, 2)
    if "argon2 1 thread" not in results:
        print("nothing measured", file=sys.stderr)
        return 1
    limit = n * results["argon2 1 thread"]
    p = report["argon2"]
    print(
        f"\npassword sign-in, Argon2id m={p['memory_cost_kib']} KiB t={p['time_cost']} "
        f"p={p['parallelism']}, {n} cores, best of {args.repeat} x {args.per_thread}/thread, "
        f"load {report['load_before']} -> {report['load_after']}, "
        f"{report['other cores busy']} cores busy with other work meanwhile"
    )
    print(f"  argon2-cffi, 1 thread          {results['argon2 1 thread']:>8.1f} /s")
    name = f"argon2 {args.threads} threads"
    print(f"  {'argon2-cffi, ' + str(args.threads) + ' threads':<29}  {results[name]:>8.1f} /s")
    print(f"  limit: {n} cores x 1 thread       {limit:>8.1f} /s")
    ratios: dict[str, float] = {}
    for kind in args.db.split(","):
        key = f"sign-in {kind}, {args.threads} threads"
        if key not in results:
            continue
        ratios[kind] = results[key] / limit
        ratios[f"{kind} to argon2 {args.threads} threads"] = results[key] / results[name]
        verdict = "met" if ratios[kind] >= TARGET else "NOT met"
        print(
            f"  {key:<29}  {results[key]:>8.1f} /s   ratio {ratios[kind]:.2f} ({verdict}); "
            f"÷ argon2 {args.threads} threads: {results[key] / results[name]:.2f}"
        )
    print("  one thread, per operation:      wall ms   CPU ms (this process)")
    argon_ms = 1000 / results["argon2 1 thread"]
    for kind in args.db.split(","):
        if kind in per_op:
            server = (
                f", + {backend_op[kind]:.1f} ms in the PostgreSQL backend"
                if kind in backend_op
                else ""
            )
            print(
                f"    sign-in {kind:<21} {per_op[kind]:6.1f}   {cpu_op[kind]:6.1f}"
                f"   (outside Argon2: {cpu_op[kind] - cpu_op['argon2']:.1f} ms CPU{server})"
            )
    print(f"    argon2 verification{'':<10} {argon_ms:6.1f}   {cpu_op['argon2']:6.1f}")
    print(f"  target (PERFORMANCE.md): sign-ins/s ÷ (cores × Argon2id/s) ≥ {TARGET}\n")
    report |= {k: round(v, 1) for k, v in results.items()}
    report["limit"] = round(limit, 1)
    report["wall ms per sign-in, 1 thread"] = {k: round(v, 2) for k, v in per_op.items()}
    report["CPU ms per op, 1 thread"] = {k: round(v, 2) for k, v in cpu_op.items()}
    if backend_op:
        report["backend CPU ms per sign-in, 1 thread"] = {
            k: round(v, 2) for k, v in backend_op.items()
        }
    report |= {f"ratio {k}": round(v, 3) for k, v in ratios.items()}
    report["target"] = TARGET
    emit(report, "signin", args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
