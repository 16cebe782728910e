"""Benchmark: smartcard challenge verifications per second, against the cost of their crypto.

Not a test. In one run, on this machine, it measures (each the best of ``--repeat`` rounds):

- ``signature``: verifications/s of a raw signature of the card's key type (``cryptography``);
- ``chain``: verifications/s of the card certificate's chain to the anchors (``cryptography``'s
  X.509 verifier, the card policy), no revocation;
- ``token``: authsvc verifying a Web eID token — parse, signature over H(origin) ‖ H(nonce),
  chain, validity, usages, revocation from the cached CRL (``SmartcardVerifier.verify_token``);
- ``flow`` (SQLite, PostgreSQL): the whole sign-in check — the flow's challenge consumed in the
  database (committed), the helpdesk list looked up, then the token verified (``verify``).

and prints the ratios of PERFORMANCE.md: each against the harmonic combination of the raw costs,
``1 / (1/chain + 1/signature)`` — what a verification must cost at the least. The target is
``flow`` ≥ 0.7.

    .venv/bin/python bench/smartcard_verify.py [--seconds 2] [--repeat 3] [--key ec|rsa]
"""

from __future__ import annotations

import argparse
import base64
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authsvc.clock import system_clock
from authsvc.config import load_settings
from authsvc.pki.certificates import _end_entity_policy, load_trust_anchors
from authsvc.pki.challenges import Challenge, issue_challenge
from authsvc.pki.service import SmartcardVerifier
from bench.report import emit
from softhsm.testca import RevocationServer, TestCA


def rate(fn: Callable[[], object], seconds: float, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(20):
                fn()
            n += 20
        best = max(best, n / elapsed)
    return best


def harmonic(*rates: float) -> float:
    return 1 / sum(1 / r for r in rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--key", choices=["ec", "rsa"], default="ec")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument(
        "--results", type=Path, default=None, help="also write the JSON line to a file there"
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="concurrent verifications (as a server's threads)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    with socket.socket() as probe:  # a free port for the CRL, known before the CA is made
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ca = TestCA.create(tmp / "ca", base_url=f"http://127.0.0.1:{port}")
    server = RevocationServer(ca, port).start()

    key = (
        ec.generate_private_key(ec.SECP256R1())
        if args.key == "ec"
        else rsa.generate_private_key(65537, 2048)
    )
    cert = ca.issue_certificate(key.public_key(), given_name="Bench", family_name="Mark")
    der = cert.public_bytes(serialization.Encoding.DER)
    algorithm = "ES256" if args.key == "ec" else "RS256"
    origin = "http://127.0.0.1:5000"

    def token_for(nonce: str) -> dict[str, str]:
        h = hashes.Hash(hashes.SHA256())
        h.update(origin.encode())
        first = h.finalize()
        h = hashes.Hash(hashes.SHA256())
        h.update(nonce.encode())
        data = first + h.finalize()
        if args.key == "ec":
            r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32) + s.to_bytes(32)
        else:
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return {
            "unverifiedCertificate": base64.b64encode(der).decode(),
            "algorithm": algorithm,
            "signature": base64.b64encode(signature).decode(),
            "format": "web-eid:1.0",
            "appVersion": "bench",
        }

    # --- the raw costs ---
    message = b"x" * 64
    public = key.public_key()
    if args.key == "ec":
        raw_sig = key.sign(message, ec.ECDSA(hashes.SHA256()))
        verify_sig = lambda: public.verify(raw_sig, message, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    else:
        raw_sig = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        verify_sig = lambda: public.verify(raw_sig, message, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731

    settings = load_settings(
        {
            "AUTHSVC_INSTANCE_DIR": str(tmp / "instance"),
            "AUTHSVC_SECRET_KEY": "b" * 40,
            "AUTHSVC_CARD_TRUST_ANCHORS": str(ca.trust_anchors),
            "AUTHSVC_ISSUER": origin,
        }
    )
    verifier = SmartcardVerifier(settings, system_clock)
    anchors = load_trust_anchors(ca.trust_anchors)
    store = Store(anchors)

    def verify_chain() -> None:
        """The chain alone, as the validator builds it (same store, same card policy)."""
        (
            PolicyBuilder()
            .store(store)
            .time(system_clock.now())
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_end_entity_policy()
            )
            .build_client_verifier()
            .verify(cert, [])
        )

    nonce = "A" * 43 + "="
    challenge = Challenge(nonce=nonce, origin=origin, expires_at=system_clock.now())
    token = token_for(nonce)
    verifier.verify_token(challenge, token)  # warms the CRL cache

    results: dict[str, float] = {
        "signature": rate(verify_sig, args.seconds, args.repeat),
        "chain": rate(verify_chain, args.seconds, args.repeat),
        "token": rate(lambda: verifier.verify_token(challenge, token), args.seconds, args.repeat),
    }

    # --- the whole check, with the challenge consumed in the database ---
    for kind in args.db.split(","):
        from bench.directory_import import fresh_database

        try:
            with fresh_database(kind) as db:
                tokens: list[tuple[str, dict[str, str]]] = []

                def prepare(n: int) -> None:
                    tokens.clear()
                    with db.transaction() as session:
                        for i in range(n):
                            flow = f"bench-{time.perf_counter_ns()}-{i}"
                            c = issue_challenge(session, flow, origin, system_clock)
                            tokens.append((flow, token_for(c.nonce)))

                best = 0.0
                for _ in range(args.repeat):
                    prepare(100 * args.threads)
                    start = time.perf_counter()
                    with ThreadPoolExecutor(args.threads) as pool:
                        list(pool.map(lambda ft: verifier.verify(db, *ft), tokens))
                    best = max(best, len(tokens) / (time.perf_counter() - start))
                results[f"flow ({kind}, {args.threads} threads)"] = best
        except Exception as exc:
            print(f"{kind}: skipped ({exc.__class__.__name__}: {exc})", file=sys.stderr)

    server.stop()
    floor = harmonic(results["chain"], results["signature"])
    print(f"\nsmartcard verification, {algorithm} card key, {args.repeat} x {args.seconds}s")
    print(f"  raw signature verifications   {results['signature']:>9,.0f} /s")
    print(f"  raw chain verifications       {results['chain']:>9,.0f} /s")
    print(f"  harmonic (chain + signature)  {floor:>9,.0f} /s   (the crypto a check cannot avoid)")
    for name in results:
        if name in ("signature", "chain"):
            continue
        print(f"  {name:<28}  {results[name]:>9,.0f} /s   ratio {results[name] / floor:.2f}")
    print("  target (PERFORMANCE.md): flow ratio ≥ 0.7\n")
    report = {k: round(v) for k, v in results.items()} | {"harmonic": round(floor)}
    report |= {
        f"ratio {k}": round(v / floor, 3)
        for k, v in results.items()
        if k not in ("signature", "chain")
    }
    emit(report, "smartcard", args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
