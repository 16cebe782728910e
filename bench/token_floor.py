"""Benchmark: the token endpoint and userinfo against the peer and against the floor of Python here.

Not a test. PERFORMANCE.md asks authsvc's token endpoint (every token persisted) to answer as many
requests per second as the peer, whose store is in memory. This benchmark tells how much of that
gap is the work itself and how much is authsvc. In one run, on this machine, with the same load
generator (Debian's ``wrk``, keep-alive connections) and the same server (granian, as
docs/deployment.md recommends, the same workers and threads), it measures in rounds:

- the peer (``../shared/peer-oidc-provider/``): ``client_credentials`` with an ES256 JWT access
  token, and userinfo;
- the floor (``bench/floor_app.py``: NOT authsvc, a yardstick with no framework, no OAuth library,
  no ORM, one hard-coded client): a ``client_credentials`` token signed ES256 with joserfc and
  ``sign`` (nothing stored), ``persist`` (its row durably committed in SQLite, WAL,
  ``synchronous = FULL``, in group commits, the workers taking turns on an ``flock``) or
  ``audit`` (plus one hash-chained audit event per token); and userinfo (the JWT verified, its
  row read);
- authsvc on SQLite, set up as ``bench/oidc_vs_peer.py`` sets it up: ``client_credentials`` and
  userinfo (a user's access token from a real code exchange).

It prints each one's requests/s (the median of ``--repeat`` runs) and its server CPU per request,
and the ratios: the floor ÷ the peer (what any Python provider that persists its tokens as authsvc
does could reach here) and authsvc ÷ the floor (what authsvc's own layers cost).

    .venv/bin/python bench/token_floor.py [--duration 8] [--repeat 3] [--warmup 2]
        [--workers N] [--threads 4] [--results bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import floor_app
from bench.oidc_vs_peer import (
    PEER_CLIENT,
    PEER_DIR,
    REDIRECT_URI,
    Instance,
    Processes,
    Run,
    Server,
    Wrk,
    basic,
    check,
    form_script,
    free_port,
    get,
    get_script,
    granian_argv,
    machine,
    post_form,
    say,
    start_peer,
    wait_http,
)
from bench.report import emit, source_revision

#: what is measured, in the order of each round
MEASURES = [
    "peer token",
    "floor token, sign",
    "floor token, persist",
    "floor token, audit",
    "authsvc token",
    "peer userinfo",
    "floor userinfo",
    "authsvc userinfo",
]
#: the ratios printed: name → (numerator, denominator)
RATIOS = {
    "floor sign ÷ peer": ("floor token, sign", "peer token"),
    "floor persist ÷ peer": ("floor token, persist", "peer token"),
    "floor audit ÷ peer": ("floor token, audit", "peer token"),
    "authsvc token ÷ peer": ("authsvc token", "peer token"),
    "authsvc token ÷ floor audit": ("authsvc token", "floor token, audit"),
    "floor userinfo ÷ peer": ("floor userinfo", "peer userinfo"),
    "authsvc userinfo ÷ peer": ("authsvc userinfo", "peer userinfo"),
    "authsvc userinfo ÷ floor": ("authsvc userinfo", "floor userinfo"),
}


def start_floor(procs: Processes, tmp: Path, workers: int, threads: int) -> tuple[str, Server]:
    """The floor under granian, as authsvc is served; its database made first."""
    database = tmp / "floor.db"
    floor_app.create(str(database))
    port = free_port()
    env = {
        **os.environ,
        "FLOOR_DB": str(database),
        "FLOOR_KEY": floor_app.new_key(),
        "FLOOR_SECRET": secrets.token_hex(32),
        "PYTHONPATH": str(ROOT),
    }
    argv = granian_argv(["bench.floor_app:app"], port, workers, threads)
    log = (tmp / "floor.log").open("wb")
    proc = procs.start("floor", argv, env=env, cwd=ROOT, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/", proc, "the floor")
    return base, Server(os.getpgid(proc.pid))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (the median)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up each")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=4, help="granian's blocking threads")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-floor-") as folder:
        procs = Processes()
        try:
            return bench(args, Path(folder), procs)
        except KeyboardInterrupt:
            return 130
        finally:
            procs.stop_all()  # before their folder goes


def bench(args: argparse.Namespace, tmp: Path, procs: Processes) -> int:
    say(f"authsvc: {source_revision()}")
    peer = start_peer(procs, PEER_DIR, tmp)
    floor, floor_server = start_floor(procs, tmp, args.workers, args.threads)

    port = free_port()
    instance = Instance(tmp, f"sqlite:///{tmp / 'instance' / 'authsvc.sqlite3'}", port)
    with contextlib.closing(instance):  # its services in this process
        workload = instance.prepare()
        proc = instance.start(procs, "granian", args.workers, args.threads, tmp / "granian.log")
        ours = Server(os.getpgid(proc.pid))
        our_auth = basic(workload.client_id, workload.client_secret)
        floor_auth = basic(*floor_app.CLIENT)
        cc = "grant_type=client_credentials"

        def our_userinfo() -> str:  # a user's access token lives 5 minutes: a fresh one each run
            code = instance.insert_codes(workload, 1, 3600)[0]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": workload.verifier,
            }
            status, body = post_form(f"{instance.base}/token", our_auth, form)
            check(status == 200 and "access_token" in body, f"authsvc's code exchange: {body}")
            bearer = f"Bearer {body['access_token']}"
            status, _, claims = get(f"{instance.base}/userinfo", bearer)
            check(status == 200 and bool(claims.get("sub")), f"authsvc userinfo: {claims}")
            return get_script("/userinfo", bearer)

        def floor_userinfo() -> str:  # the floor's tokens live 5 minutes too
            status, body = post_form(
                f"{floor}/persist/token", floor_auth, {"grant_type": "client_credentials"}
            )
            check(status == 200 and "access_token" in body, f"the floor's token: {body}")
            bearer = f"Bearer {body['access_token']}"
            status, _, claims = get(f"{floor}/userinfo", bearer)
            check(status == 200 and bool(claims.get("sub")), f"the floor's userinfo: {claims}")
            return get_script("/userinfo", bearer)

        status, _, meta = get(f"{peer.base}/.well-known/openid-configuration")
        check(status == 200 and "userinfo_endpoint" in meta, f"peer discovery: {meta}")
        peer_userinfo = urllib.parse.urlsplit(meta["userinfo_endpoint"]).path
        peer_bearer = f"Bearer {peer.userinfo_token}"
        status, _, claims = get(f"{peer.base}{peer_userinfo}", peer_bearer)
        check(status == 200 and bool(claims.get("sub")), f"peer userinfo: {claims}")
        peer_cc = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "resource": "urn:bench:jwt"}
        )
        peer_server = Server(peer.pid)
        peer_token = form_script("/token", basic(*PEER_CLIENT), peer_cc)
        floor_token = {
            mode: form_script(f"/{mode}/token", floor_auth, cc) for mode in floor_app.MODES
        }
        our_token = form_script("/token", our_auth, cc)
        peer_me = get_script(peer_userinfo, peer_bearer)
        #: what each measure asks, of whom: its base URL, its wrk script (made afresh for each run)
        plan: dict[str, tuple[str, Callable[[], str], Server]] = {
            "peer token": (peer.base, lambda: peer_token, peer_server),
            "floor token, sign": (floor, lambda: floor_token["sign"], floor_server),
            "floor token, persist": (floor, lambda: floor_token["persist"], floor_server),
            "floor token, audit": (floor, lambda: floor_token["audit"], floor_server),
            "authsvc token": (instance.base, lambda: our_token, ours),
            "peer userinfo": (peer.base, lambda: peer_me, peer_server),
            "floor userinfo": (floor, floor_userinfo, floor_server),
            "authsvc userinfo": (instance.base, our_userinfo, ours),
        }
        say(
            f"granian, {args.workers} workers × {args.threads} blocking threads, on {machine()}; "
            f"wrk: {args.connections} connections, {args.repeat} × {args.duration:g} s each"
        )
        wrk = Wrk(tmp, args.connections, args.wrk_threads)
        runs: dict[str, list[Run]] = {name: [] for name in MEASURES}
        for round_ in range(1, args.repeat + 1):
            for name in MEASURES:
                base, make_script, server = plan[name]
                script = make_script()
                if args.warmup > 0:
                    wrk.run(f"warm-{name}", f"{base}/", script, args.warmup, server)
                run = wrk.run(name, f"{base}/", script, args.duration, server)
                runs[name].append(run)
                say(
                    f"  [{round_}/{args.repeat}] {name:22} {run.rate:9,.0f} req/s  "
                    f"non-2xx {run.non2xx}  cpu {run.cpu_ms:.2f} ms/req (sys {run.sys_ms:.2f})  "
                    f"others {run.other_cores:.1f} cores"
                )
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "authsvc": source_revision(),
            "peer": peer.version,
            "server": "granian",
            "workers": args.workers,
            "threads": args.threads,
            "duration": args.duration,
            "repeat": args.repeat,
            "connections": args.connections,
        }
        valid = all(run.valid for name in MEASURES for run in runs[name])
        report["valid"] = valid
        say(f"\nmedians of {args.repeat} × {args.duration:g} s:")
        for name in MEASURES:
            rate = statistics.median(run.rate for run in runs[name])
            cpu = statistics.median(run.cpu_ms for run in runs[name])
            report[name] = round(rate)
            report[f"cpu ms/req {name}"] = round(cpu, 3)
            say(f"  {name:22} {rate:9,.0f} req/s   server cpu {cpu:.2f} ms/req")
        say("\nratios (req/s ÷ req/s):")
        for ratio, (top, bottom) in RATIOS.items():
            value = report[top] / report[bottom]
            report[f"ratio {ratio}"] = round(value, 3)
            say(f"  {ratio:28} {value:.2f}")
        report["rounds req/s"] = {n: [round(run.rate) for run in runs[n]] for n in MEASURES}
        others = [run.other_cores for name in MEASURES for run in runs[name]]
        report["other cores busy"] = round(statistics.mean(others), 2)
        say(f"  other processes kept {report['other cores busy']} of {os.cpu_count()} cores busy")
        if not valid:
            say("INVALID: a run answered non-2xx or had no request (see above)")
    emit(report, "token-floor", args.results)
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
