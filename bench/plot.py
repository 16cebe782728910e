"""Plot authsvc against the peer, requests per second per endpoint, from bench/results/.

Reads the JSON lines ``bench/oidc_vs_peer.py --results bench/results`` wrote (the newest file of
each database) and draws one panel per database: for each endpoint the peer's and authsvc's
medians, side by side on a logarithmic axis, with authsvc ÷ peer and its target above the pair.

    .venv/bin/python bench/plot.py [--results bench/results] [--out docs/performance-vs-peer.png]

Needs matplotlib (``.venv/bin/python -m pip install matplotlib``); it is not a dependency of
authsvc.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# label on the plot → (authsvc's figure, the peer's figure, ratio name, target), as PERFORMANCE.md
ENDPOINTS = [
    ("token\n(client_credentials)", "authsvc client_credentials", "peer client_credentials",
     "token", 1.0),
    ("code exchange\n(÷ peer's\nclient_credentials)", "authsvc code exchange",
     "peer client_credentials", "code exchange", 0.7),
    ("introspection", "authsvc introspection", "peer introspection", "introspection", 1.0),
    ("userinfo", "authsvc userinfo", "peer userinfo", "userinfo", 1.0),
    ("discovery", "authsvc discovery", "peer discovery", "discovery", 1.0),
    ("JWKS", "authsvc JWKS", "peer JWKS", "JWKS", 1.0),
]  # fmt: skip


def newest(results: Path) -> dict[str, dict[str, Any]]:
    """The newest valid report of each database (file names sort by time)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("oidc-vs-peer-*.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                report = json.loads(line)
                found[report["db"]] = report
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance-vs-peer.png")
    args = parser.parse_args()
    reports = newest(args.results)
    if not reports:
        print(f"error: no oidc-vs-peer-*.json in {args.results}", file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = [db for db in ("sqlite", "postgresql") if db in reports]
    fig, axes = plt.subplots(len(dbs), 1, figsize=(11, 4.6 * len(dbs)), squeeze=False)
    width = 0.38
    for ax, db in zip(axes[:, 0], dbs, strict=True):
        r = reports[db]
        server = str(r.get("server", "gunicorn")).split()[0]  # older results: gunicorn only
        xs = range(len(ENDPOINTS))
        peer = [r[p] for _, _, p, _, _ in ENDPOINTS]
        ours = [r[a] for _, a, _, _, _ in ENDPOINTS]
        ax.bar([x - width / 2 for x in xs], peer, width, label="peer: node oidc-provider (memory)")
        ax.bar([x + width / 2 for x in xs], ours, width, label=f"authsvc, {server}, {db}")
        for x, (_, _, _, ratio, target), p, a in zip(xs, ENDPOINTS, peer, ours, strict=True):
            value = r[f"ratio {ratio}"]
            verdict = "met" if value >= target else "not met"
            label = f"{value:.2f}× (≥ {target}: {verdict})"
            ax.text(x, max(p, a) * 1.15, label, ha="center", fontsize=8)
            ax.text(x - width / 2, p / 1.6, f"{p:,}", ha="center", fontsize=8, color="white")
            ax.text(x + width / 2, a / 1.6, f"{a:,}", ha="center", fontsize=8, color="white")
        ax.set_yscale("log")
        ax.set_ylim(50, max(peer + ours) * 3)
        ax.set_xticks(list(xs), [label for label, *_ in ENDPOINTS], fontsize=9)
        ax.set_ylabel("requests/s (median, log scale)")
        ax.set_title(
            f"{db}: medians of {r['repeat']} × {r['duration']:.0f} s, wrk {r['connections']} "
            f"connections, {r['workers']} workers × {r['threads']} threads; {r['date'][:10]}, "
            f"{r['machine']}",
            fontsize=9,
        )
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle("authsvc against the peer (bench/oidc_vs_peer.py): authsvc ÷ peer above each pair")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"written {args.out} from {', '.join(dbs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
