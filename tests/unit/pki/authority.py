"""A card authority made in-test: root CA → issuing CA → card certificates, CRLs, OCSP answers.

Also signs Web eID authentication tokens as a card would, and serves CRLs and OCSP over real HTTP on
127.0.0.1 (:class:`RevocationServer`). Keys are generated once per test session and reused (RSA
generation is slow); certificates are made fresh by each test.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Any  # ec / rsa / ed25519 private keys

_KEYS: dict[tuple[str, int], PrivateKey] = {}
_KEYS_LOCK = threading.Lock()


def private_key(kind: str = "p256", index: int = 0) -> PrivateKey:
    """A key of ``kind`` (p256, p384, p521, k256, rsa2048, rsa1024, ed25519), the same every call."""
    with _KEYS_LOCK:
        if (kind, index) not in _KEYS:
            _KEYS[(kind, index)] = _generate(kind)
        return _KEYS[(kind, index)]


def _generate(kind: str) -> PrivateKey:
    curves = {
        "p256": ec.SECP256R1,
        "p384": ec.SECP384R1,
        "p521": ec.SECP521R1,
        "k256": ec.SECP256K1,
    }
    if kind in curves:
        return ec.generate_private_key(curves[kind]())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def name(cn: str, **extra: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "LU")]
    oids = {
        "given_name": NameOID.GIVEN_NAME,
        "surname": NameOID.SURNAME,
        "serial_number": NameOID.SERIAL_NUMBER,
        "organization": NameOID.ORGANIZATION_NAME,
    }
    for key, value in extra.items():
        attributes.append(x509.NameAttribute(oids[key], value))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def key_usage(**flags: bool) -> x509.KeyUsage:
    values = {
        "digital_signature": False,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": False,
        "crl_sign": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    values.update(flags)
    return x509.KeyUsage(**values)


AUTH_USAGE = key_usage(digital_signature=True)
CA_USAGE = key_usage(key_cert_sign=True, crl_sign=True, digital_signature=True)
SHA256 = hashes.SHA256()


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else SHA256


@dataclass
class Card:
    certificate: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def b64(self) -> str:
        return base64.b64encode(self.der).decode("ascii")

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    @property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string()


@dataclass
class CardAuthority:
    """A root and an issuing CA valid around ``now``; issues cards, CRLs and OCSP answers."""

    now: dt.datetime
    label: str = "Test"
    #: distinct authorities need distinct indices (distinct keys)
    key_index: int = 0
    root_key: PrivateKey = None
    issuing_key: PrivateKey = None
    root: x509.Certificate = field(init=False)
    issuing: x509.Certificate = field(init=False)
    issued: dict[int, x509.Certificate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root_key = self.root_key or private_key("p384", self.key_index)
        self.issuing_key = self.issuing_key or private_key("p256", 100 + self.key_index)
        start, end = self.now - dt.timedelta(days=3650), self.now + dt.timedelta(days=3650)
        root_name = name(f"{self.label} Root CA", organization="authsvc tests")
        self.root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(self.root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()),
                critical=False,
            )
            .sign(self.root_key, SHA256)
        )
        self.issuing = self.ca_certificate(
            f"{self.label} Issuing CA", self.issuing_key, start=start, end=end
        )

    def ca_certificate(
        self,
        cn: str,
        key: PrivateKey,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A CA certificate signed by the root."""
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn, organization="authsvc tests"))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start or self.now - dt.timedelta(days=3650))
            .not_valid_after(end or self.now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                critical=False,
            )
            .sign(self.root_key, SHA256)
        )

    @property
    def anchors(self) -> list[x509.Certificate]:
        return [self.root, self.issuing]

    def anchors_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.anchors)

    def issue(
        self,
        key: PrivateKey | str = "p256",
        *,
        given_name: str = "Anne",
        surname: str = "Muller",
        serial_number: str | None = "1970051700012",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        usage: x509.KeyUsage | None = AUTH_USAGE,
        eku: Sequence[x509.ObjectIdentifier] | None = None,
        crl_urls: Iterable[str] = (),
        ocsp_urls: Iterable[str] = (),
        serial: int | None = None,
        signer: PrivateKey | None = None,
        issuer: x509.Name | None = None,
        self_signed: bool = False,
        extra: Iterable[tuple[x509.ExtensionType, bool]] = (),
    ) -> Card:
        """A card authentication certificate (LuxTrust-like: keyUsage digitalSignature, no EKU)."""
        card_key = private_key(key) if isinstance(key, str) else key
        subject_extra = {"given_name": given_name, "surname": surname}
        if serial_number:
            subject_extra["serial_number"] = serial_number
        subject = name(f"{given_name} {surname}", **subject_extra)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject if self_signed else (issuer or self.issuing.subject))
            .public_key(card_key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before or self.now - dt.timedelta(days=30))
            .not_valid_after(not_after or self.now + dt.timedelta(days=3 * 365))
        )
        if usage is not None:
            builder = builder.add_extension(usage, critical=True)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing_key.public_key()),
                critical=False,
            )
        crl_urls, ocsp_urls = list(crl_urls), list(ocsp_urls)
        if crl_urls:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(u) for u in crl_urls], None, None, None
                        )
                    ]
                ),
                critical=False,
            )
        if ocsp_urls:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(u),
                        )
                        for u in ocsp_urls
                    ]
                ),
                critical=False,
            )
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        sign_with = card_key if self_signed else (signer or self.issuing_key)
        certificate = builder.sign(sign_with, _hash_for(sign_with))
        self.issued[certificate.serial_number] = certificate
        return Card(certificate, card_key)

    # --- CRLs ------------------------------------------------------------------------------------

    def crl(
        self,
        revoked: Iterable[int] = (),
        *,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | bool | None = None,
        signer: PrivateKey | None = None,
        issuer: x509.Name | None = None,
        number: int = 1,
        extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    ) -> x509.CertificateRevocationList:
        """A CRL of the issuing CA listing ``revoked`` (nextUpdate: a day later unless given)."""
        this_update = this_update or self.now - dt.timedelta(hours=1)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer or self.issuing.subject)
            .last_update(this_update)
            .next_update(
                next_update
                if isinstance(next_update, dt.datetime)
                else this_update + dt.timedelta(days=1)
            )
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(this_update)
                .build()
            )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer or self.issuing_key, SHA256)

    def crl_der(self, *args: Any, **kwargs: Any) -> bytes:
        return self.crl(*args, **kwargs).public_bytes(serialization.Encoding.DER)

    # --- OCSP ------------------------------------------------------------------------------------

    def responder(self, *, eku: bool = True, signer: PrivateKey | None = None) -> Card:
        """A delegated OCSP responder certificate issued by the issuing CA."""
        key = private_key("p256", 77)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(f"{self.label} OCSP Responder"))
            .issuer_name(self.issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=1))
            .not_valid_after(self.now + dt.timedelta(days=30))
            .add_extension(key_usage(digital_signature=True), critical=True)
        )
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
            )
        return Card(builder.sign(signer or self.issuing_key, SHA256), key)

    def ocsp_response(
        self,
        request_der: bytes,
        *,
        status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | bool | None = True,
        responder: Card | None = None,
        signer: PrivateKey | None = None,
        about: x509.Certificate | None = None,
        nonce: bytes | bool | None = True,
        impersonate: x509.Certificate | None = None,
    ) -> bytes:
        """The answer to ``request_der``: signed by the issuing CA unless ``responder`` is given.

        ``next_update=True``: an hour after thisUpdate; ``nonce=True``: echo the request's.
        ``impersonate``: name this certificate (same name as the CA, other key) as the responder.
        """
        request = ocsp.load_der_ocsp_request(request_der)
        card = about or self.issued[request.serial_number]
        this_update = this_update or self.now - dt.timedelta(minutes=1)
        if next_update is True:
            next_update = this_update + dt.timedelta(hours=1)
        revoked = status == ocsp.OCSPCertStatus.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=card,
            issuer=self.issuing,
            algorithm=hashes.SHA1(),
            cert_status=status,
            this_update=this_update,
            next_update=next_update or None,
            revocation_time=this_update - dt.timedelta(days=1) if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        if responder is not None:
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder.certificate)
            builder = builder.certificates([responder.certificate])
            key = signer or responder.key
        else:
            builder = builder.responder_id(
                ocsp.OCSPResponderEncoding.NAME, impersonate or self.issuing
            )
            key = signer or self.issuing_key
        if nonce is True:
            try:
                echoed = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
                builder = builder.add_extension(x509.OCSPNonce(echoed), critical=False)
            except x509.ExtensionNotFound:
                pass
        elif isinstance(nonce, bytes):
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.sign(key, SHA256).public_bytes(serialization.Encoding.DER)


# --- Web eID tokens ------------------------------------------------------------------------------

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def sign_challenge(key: PrivateKey, algorithm: str, *, origin: str, nonce: str) -> bytes:
    """What a card (the Web eID app) signs: ``H(origin) ‖ H(nonce)`` with ``algorithm``."""
    hash_cls = HASHES[algorithm[2:]]
    digest_origin = hashlib.new(hash_cls.name, origin.encode()).digest()
    digest_nonce = hashlib.new(hash_cls.name, nonce.encode()).digest()
    data = digest_origin + digest_nonce
    if algorithm.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_cls())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if algorithm.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
        return key.sign(data, pss, hash_cls())
    return key.sign(data, padding.PKCS1v15(), hash_cls())


def make_token(
    card: Card,
    algorithm: str = "ES256",
    *,
    origin: str,
    nonce: str,
    token_format: str = "web-eid:1.0",
    signature: bytes | None = None,
) -> dict[str, Any]:
    """A Web eID authentication token as the browser extension posts it (INTERFACE §4)."""
    if signature is None:
        signature = sign_challenge(card.key, algorithm, origin=origin, nonce=nonce)
    return {
        "unverifiedCertificate": card.b64,
        "algorithm": algorithm,
        "signature": base64.b64encode(signature).decode("ascii"),
        "format": token_format,
        "appVersion": "https://web-eid.eu/web-eid-app/releases/2.5.0",
    }


#: (algorithm, key kind) pairs: every algorithm of INTERFACE §4 with a key that fits it
ALGORITHM_KEYS = [
    ("ES256", "p256"),
    ("ES384", "p384"),
    ("ES512", "p521"),
    ("RS256", "rsa2048"),
    ("RS384", "rsa2048"),
    ("RS512", "rsa2048"),
    ("PS256", "rsa2048"),
    ("PS384", "rsa2048"),
    ("PS512", "rsa2048"),
]


# --- serving CRLs and OCSP over HTTP -------------------------------------------------------------

Route = bytes | Callable[[bytes], tuple[int, str, bytes]]


class RevocationServer:
    """An HTTP server on 127.0.0.1 (ephemeral port) serving CRLs (GET) and OCSP (POST).

    ``routes[path]`` is the body of a 200 (``application/pkix-crl``) or a callable taking the
    request body and returning (status, content type, body). ``hits`` counts requests per path.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.hits[self.path] += 1
                server.requests.append((self.command, self.path, dict(self.headers), body))
                if server.delay:
                    threading.Event().wait(server.delay)
                route = server.routes.get(self.path)
                if route is None:
                    status, ctype, data = 404, "text/plain", b"not found"
                elif isinstance(route, bytes):
                    status, ctype, data = 200, "application/pkix-crl", route
                else:
                    status, ctype, data = route(body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> RevocationServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def closed_port_url(path: str = "/crl") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
