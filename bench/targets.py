"""The targets of PERFORMANCE.md against the newest figures in bench/results/, as one table.

Reads the newest report of each benchmark that ``make bench`` runs (each writes its JSON line to
``bench/results/<name>-<UTC time>.json``) and prints, in Markdown, every target with what was
measured, whether it is met, and the files it came from; then the floor of ``bench/token_floor.py``.
It measures nothing itself: the table is what docs/performance.md shows at a glance.

    .venv/bin/python bench/targets.py [--results bench/results]

A target whose benchmark has not been run reads "not measured", and one whose report left a
database out (``--db sqlite``) names it. Memory is flat when no worker grew by more than 2 % of
its size after the first round of every endpoint. Reports of different revisions are named as
such, since their ratios then compare different code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

DATABASES = ("sqlite", "postgresql")


class ReportError(Exception):
    """A report that cannot be read: the message names the file."""


@dataclass(frozen=True)
class Report:
    path: Path
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise ReportError(f"{self.path.name}: no {key!r}") from None


def newest(
    results: Path, name: str, match: Callable[[dict[str, Any]], bool] = bool
) -> Report | None:
    """The newest report ``name-*.json`` that ``match`` accepts (the file names sort by time)."""
    found = None
    for path in sorted(results.glob(f"{name}-*.json"), key=lambda p: p.stem.rsplit("-", 1)[-1]):
        try:
            data = json.loads(path.read_text().strip().splitlines()[-1])
        except (ValueError, IndexError, OSError) as exc:
            raise ReportError(f"{path.name}: not a benchmark's JSON line ({exc})") from None
        if not isinstance(data, dict):
            raise ReportError(f"{path.name}: not a benchmark's JSON object")
        if match(data):
            found = Report(path, data)
    return found


def field_is(key: str, value: object) -> Callable[[dict[str, Any]], bool]:
    """Accepts the reports whose ``key`` is ``value`` (one database, one thread count)."""
    return lambda report: report.get(key) == value


def at_least(floor: float) -> Callable[[float], bool]:
    return lambda value: value >= floor


def at_most(ceiling: float) -> Callable[[float], bool]:
    return lambda value: value <= ceiling


def ratio(value: float) -> str:
    return f"{value:.2f}"


def status(ok: bool, missing: Sequence[str] = ()) -> str:
    """met or not met; with the databases the reports left out named (a benchmark run with
    ``--db sqlite``, or one that skipped a database): the target is then only partly measured."""
    return ("met" if ok else "**not met**") + (
        f" ({', '.join(missing)}: not measured)" if missing else ""
    )


def verdict(
    values: list[float], passes: Callable[[float], bool], missing: Sequence[str] = ()
) -> str:
    return status(bool(values) and all(passes(v) for v in values), missing)


# a flat worker grows by no more than this share of its size after the first round of every
# endpoint (caches and pools fill in the first round; growth after it is what would not stop)
FLAT = 0.02


def collect(
    results: Path,
) -> tuple[list[tuple[str, str, str, list[Report]]], list[str], list[Report]]:
    """(target, measured, status, reports used) per target of PERFORMANCE.md; the floor's lines
    and reports."""
    oidc = {db: newest(results, "oidc-vs-peer", field_is("db", db)) for db in DATABASES}
    signin = newest(results, "signin")
    smartcard = newest(results, "smartcard")
    scale = newest(results, "scale")
    start = {db: newest(results, "start", field_is("db", db)) for db in DATABASES}
    rows: list[tuple[str, str, str, list[Report]]] = []

    def not_measured(target: str, bench: str) -> None:
        rows.append((target, f"not measured (run `bench/{bench}`)", "—", []))

    runs = {db: r for db, r in oidc.items() if r is not None}
    peer_runs = list(runs.values())
    for target, keys, floor in [
        ("token endpoint ÷ peer ≥ 1.0", ["ratio token"], 1.0),
        ("code exchange ÷ peer's client_credentials ≥ 0.7", ["ratio code exchange"], 0.7),
        ("introspection, userinfo ÷ peer ≥ 1.0", ["ratio introspection", "ratio userinfo"], 1.0),
        ("discovery, JWKS ÷ peer ≥ 1.0, with Cache-Control and ETag",
         ["ratio discovery", "ratio JWKS"], 1.0),
    ]:  # fmt: skip
        if not peer_runs:
            not_measured(target, "oidc_vs_peer.py")
            continue
        values = [runs[db][key] for db in runs for key in keys]
        measured = ", ".join(
            " / ".join(ratio(r[key]) for key in keys) + f" ({db})" for db, r in runs.items()
        )
        headers = "ratio discovery" not in keys or all(
            all(r["caching"][f"authsvc {what}"].get(h) for h in ("cache-control", "etag"))
            for r in peer_runs
            for what in ("discovery", "JWKS")
        )
        if "ratio discovery" in keys:
            measured += "; headers: " + ("yes" if headers else "**missing**")
        ok = headers and all(v >= floor for v in values)
        missing = [db for db in DATABASES if db not in runs]
        rows.append((target, measured, status(ok, missing), peer_runs))

    target = "password sign-in ÷ (cores × Argon2id/s) ≥ 0.9"
    if signin is None:
        not_measured(target, "signin.py")
    else:
        dbs = [db for db in DATABASES if f"ratio {db}" in signin.data]
        values = [signin[f"ratio {db}"] for db in dbs]
        threads = signin["threads"]
        measured = (
            ", ".join(f"{ratio(v)} ({db})" for db, v in zip(dbs, values, strict=True))
            + f"; Argon2id alone from {threads} threads: "
            + f"{ratio(signin[f'argon2 {threads} threads'] / signin['limit'])} of the limit"
        )
        missing = [db for db in DATABASES if db not in dbs]
        rows.append((target, measured, verdict(values, at_least(0.9), missing), [signin]))

    target = "smartcard sign-in ÷ harmonic(chain, signature) ≥ 0.7"
    if smartcard is None:
        not_measured(target, "smartcard_verify.py")
    else:
        # "ratio flow (<database>, <N> threads)", one for each database the run measured
        flows = {
            key.removeprefix("ratio flow (").split(",")[0]: value
            for key, value in smartcard.data.items()
            if key.startswith("ratio flow (")
        }
        values = list(flows.values())
        measured = (
            ", ".join(f"{ratio(v)} ({db})" for db, v in flows.items())
            + f", the challenge consumed; {ratio(smartcard['ratio token'])} for the token alone,"
            + " without the database"
        )
        missing = [db for db in DATABASES if db not in flows]
        rows.append((target, measured, verdict(values, at_least(0.7), missing), [smartcard]))

    target = "p99 with 1,000,000 accounts ÷ with 10,000 ≤ 1.2"
    if scale is None:
        not_measured(target, "scale.py")
    else:
        values = [scale["ratio sign-in p99"], scale["ratio code exchange p99"]]
        measured = f"sign-in {ratio(values[0])}, code exchange {ratio(values[1])} (postgresql)"
        rows.append((target, measured, verdict(values, at_most(1.2)), [scale]))

    target = "memory per worker after 100,000 requests ≤ 120 MB, flat"
    if not peer_runs:
        not_measured(target, "oidc_vs_peer.py")
    else:
        parts, ok = [], True
        for db, r in runs.items():
            rss = r["worker rss MB"]
            served = r.data.get("authsvc requests served") or sum(
                sum(v) for k, v in r["requests"].items() if k.startswith("authsvc ")
            )  # older reports: the measured rounds' requests only
            per_worker = served // r["workers"]
            largest = max(rss["end"])
            grew = max(e - f for e, f in zip(rss["end"], rss["rounds"][0], strict=True))
            flat = grew <= FLAT * max(rss["rounds"][0])
            ok = ok and largest <= 120 and per_worker >= 100_000 and rss["same workers"] and flat
            parts.append(
                f"{largest:.1f} MB ({db}) after ~{per_worker:,} requests a worker, "
                f"{grew:+.1f} MB after the first round"
            )
        missing = [db for db in DATABASES if db not in runs]
        rows.append((target, "; ".join(parts), status(ok, missing), peer_runs))

    target = "start until discovery answers ≤ 2 s"
    starts = [r for r in start.values() if r is not None]
    if not starts:
        not_measured(target, "start.py")
    else:
        values, parts = [], []
        for r in starts:
            values += [r["authsvc serve"]["median s"], r["granian, 2 workers"]["median s"]]
            parts.append(
                f"{r['authsvc serve']['median s']:.2f} s `authsvc serve`, "
                f"{r['granian, 2 workers']['median s']:.2f} s granian × 2 ({r['db']}; medians)"
            )
        missing = [db for db in DATABASES if start[db] is None]
        rows.append((target, "; ".join(parts), verdict(values, at_most(2.0), missing), starts))

    floor_lines, floors = [], []
    for threads in (4, 16):
        f = newest(results, "token-floor", field_is("threads", threads))
        if f is None:
            continue
        floors.append(f)
        floor_lines.append(
            f"- {threads} threads per worker (`{f.path.name}`): the floor ÷ peer "
            f"{ratio(f['ratio floor sign ÷ peer'])} storing nothing, "
            f"{ratio(f['ratio floor persist ÷ peer'])} committing each token durably, "
            f"{ratio(f['ratio floor audit ÷ peer'])} with the audit event; authsvc's token "
            f"endpoint {ratio(f['ratio authsvc token ÷ floor audit'])} of the floor with audit; "
            f"userinfo: the floor {ratio(f['ratio floor userinfo ÷ peer'])} × the peer, authsvc "
            f"{ratio(f['ratio authsvc userinfo ÷ floor'])} of the floor"
        )
    return rows, floor_lines, floors


def render(results: Path) -> str:
    rows, floor_lines, floors = collect(results)
    lines = [
        "| target (PERFORMANCE.md) | measured | status | from |",
        "| --- | --- | --- | --- |",
    ]
    used: dict[Path, Report] = {}
    for target, measured, status, reports in rows:
        names = ", ".join(f"`{r.path.name}`" for r in reports) or "—"
        lines.append(f"| {target} | {measured} | {status} | {names} |")
        used.update({r.path: r for r in reports})
    used.update({r.path: r for r in floors})
    if floor_lines:
        lines += [
            "",
            "The floor (`bench/token_floor.py`), in the same run as the peer and authsvc:",
            "",
        ]
        lines += floor_lines
    revisions = sorted({str(r.data.get("revision", "unknown")) for r in used.values()})
    if len(revisions) > 1:
        lines += ["", f"Note: these reports measured different revisions: {', '.join(revisions)}."]
    elif revisions:
        lines += ["", f"Revision measured: {revisions[0]}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not args.results.is_dir():
        print(f"error: no results folder {args.results}", file=sys.stderr)
        return 1
    try:
        print(render(args.results))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyError, TypeError, ValueError) as exc:
        print(
            f"error: a report in {args.results} lacks a figure or holds a wrong one: {exc!r}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
