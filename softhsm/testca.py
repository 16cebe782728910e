"""A test "LuxTrust" card authority, and smartcards on SoftHSM2 tokens.

No real LuxTrust card or reader is on our machines: one SoftHSM2 token stands in for one card, its
private key generated **on the token** (sensitive, never extractable), its certificate issued by the
test CA made here and stored on the token beside the key, exactly where a card's PKCS#11 middleware
would show them. Everything above PKCS#11 (the card agent, the provider) is what it would be with a
real card.

Used by ``make run``'s demo, by the tests, and by anyone evaluating authsvc::

    python softhsm/testca.py init   instance/demo-ca --base-url http://127.0.0.1:5081
    python softhsm/testca.py issue-card instance/demo-ca --tokens instance/softhsm \\
        --given-name Marie --family-name Dupont --label card-marie --pin 123456
    python softhsm/testca.py revoke instance/demo-ca SERIAL --reason key_compromise
    python softhsm/testca.py serve  instance/demo-ca            # CRL + OCSP on 127.0.0.1

The authority (its files, all in one folder):

=================  ==============================================================================
root.pem/.key      "Test LuxTrust Root CA" (EC P-384, self-signed, 20 years)
issuing.pem/.key   "Test LuxTrust Smartcard CA" (EC P-256, issued by the root, path length 0)
ocsp.pem/.key      the OCSP responder (issued by the issuing CA, EKU OCSPSigning, ocsp-nocheck)
trust-anchors.pem  root + issuing CA: what ``AUTHSVC_CARD_TRUST_ANCHORS`` points at
issuing.crl        the current CRL of the issuing CA (DER), served at ``<base-url>/crl/issuing.crl``
state.json         base URL, issued and revoked serials, CRL number
=================  ==============================================================================

Card certificates carry key usage digitalSignature (critical), no extended key usage (as on
Luxembourg cards; the client-authentication EKU is an option), a CRL Distribution Point and an OCSP
AIA pointing at the base URL.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.UTC
CA_KEY_TYPES = {"root": ec.SECP384R1(), "issuing": ec.SECP256R1()}
CRL_VALIDITY = dt.timedelta(days=1)
CARD_VALIDITY = dt.timedelta(days=3 * 365)
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
}

# --- SoftHSM2 ------------------------------------------------------------------------------------

SOFTHSM2_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def softhsm2_module() -> str:
    for candidate in SOFTHSM2_MODULES:
        if os.path.exists(candidate):
            return candidate
    raise RuntimeError("SoftHSM2 is not installed (Debian: apt-get install softhsm2)")


class SoftHSM:
    """A SoftHSM2 token store of our own: ``<folder>/softhsm2.conf`` and ``<folder>/tokens/``.

    Never the system's token directory. Processes that should see these tokens (the card agent,
    a PKCS#11 key store) run with ``SOFTHSM2_CONF`` set to :attr:`conf` (see :meth:`env`).
    """

    def __init__(self, folder: Path | str, module: str | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.tokens = self.folder / "tokens"
        self.conf = self.folder / "softhsm2.conf"
        self.module = module or softhsm2_module()
        self.tokens.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        if not self.conf.exists():
            self.conf.write_text(
                "# SoftHSM2 configuration of this authsvc instance's test cards\n"
                f"directories.tokendir = {self.tokens}/\n"
                "objectstore.backend = file\n"
                "log.level = ERROR\n"
                "slots.removable = true\n"
            )

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def _util(self, *args: str) -> str:
        result = subprocess.run(
            ["softhsm2-util", *args],
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"softhsm2-util {args[0]}: {(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def init_token(self, label: str, *, so_pin: str, user_pin: str) -> None:
        """A blank card: a new token in the first free slot."""
        self._util(
            "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin
        )

    def delete_token(self, label: str) -> None:
        """The card is pulled out of the reader."""
        self._util("--delete-token", "--token", label)

    def labels(self) -> list[str]:
        out = self._util("--show-slots")
        return [
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.strip().startswith("Label:") and line.split(":", 1)[1].strip()
        ]

    @contextlib.contextmanager
    def session(
        self, label: str, *, user_pin: str | None = None, rw: bool = False
    ) -> Iterator[Any]:
        """A PKCS#11 session on one of our tokens, in this process."""
        import pkcs11

        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        lib = pkcs11.lib(self.module)
        lib.reinitialize()  # see tokens made since the library was loaded, with this conf
        token = lib.get_token(token_label=label)
        with token.open(rw=rw, user_pin=user_pin) as session:
            yield session


# --- the authority -------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "LU"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test LuxTrust S.A. (not a real CA)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: Any) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _ca_certificate(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    path_length: int | None,
    not_before: dt.datetime,
    days: int,
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(
            issuer_key,
            hashes.SHA384() if isinstance(issuer_key.curve, ec.SECP384R1) else hashes.SHA256(),
        )
    )


def _load_pem_key(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    values = {name: flags.get(name, False) for name in names}
    return x509.KeyUsage(**values)


@dataclass
class Card:
    """A card: a token label, its PINs, and the certificate on it."""

    label: str
    user_pin: str
    so_pin: str
    certificate: x509.Certificate
    key_type: str

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    def to_dict(self) -> dict[str, str]:
        return {
            "label": self.label,
            "pin": self.user_pin,
            "serial": self.serial_hex,
            "subject": self.certificate.subject.rfc4514_string(),
            "issuer": self.certificate.issuer.rfc4514_string(),
            "key_type": self.key_type,
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
        }


@dataclass
class TestCA:
    """The test card authority kept in one folder (see the module's docstring)."""

    __test__ = False  # not a pytest class

    folder: Path
    base_url: str
    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: Any = field(repr=False)
    ocsp_cert: x509.Certificate
    ocsp_key: Any = field(repr=False)
    state: dict[str, Any] = field(repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    #: state.json as last read or written here: (mtime_ns, size, inode)
    _stamp: tuple[int, int, int] | None = field(default=None, repr=False)

    # -- creation and loading --

    @classmethod
    def create(cls, folder: Path | str, *, base_url: str, name: str = "Test LuxTrust") -> TestCA:
        folder = Path(folder).resolve()
        if (folder / "state.json").exists():
            raise FileExistsError(f"{folder} already holds a test CA")
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        not_before = _now() - dt.timedelta(days=1)
        root_key = ec.generate_private_key(CA_KEY_TYPES["root"])
        root_name = _name(f"{name} Root CA")
        root = _ca_certificate(
            root_name,
            root_key,
            root_name,
            root_key,
            path_length=1,
            not_before=not_before,
            days=7300,
        )
        issuing_key = ec.generate_private_key(CA_KEY_TYPES["issuing"])
        issuing = _ca_certificate(
            _name(f"{name} Smartcard CA"),
            issuing_key,
            root_name,
            root_key,
            path_length=0,
            not_before=not_before,
            days=3650,
        )
        ocsp_key = ec.generate_private_key(ec.SECP256R1())
        ocsp_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} Smartcard CA OCSP Responder"))
            .issuer_name(issuing.subject)
            .public_key(ocsp_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
            )
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()),
                critical=False,
            )
            .sign(issuing_key, hashes.SHA256())
        )
        _write_key(folder / "root.key", root_key)
        _write_key(folder / "issuing.key", issuing_key)
        _write_key(folder / "ocsp.key", ocsp_key)
        for fname, cert in (("root.pem", root), ("issuing.pem", issuing), ("ocsp.pem", ocsp_cert)):
            (folder / fname).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "trust-anchors.pem").write_bytes(
            root.public_bytes(serialization.Encoding.PEM)
            + issuing.public_bytes(serialization.Encoding.PEM)
        )
        state = {"base_url": base_url.rstrip("/"), "issued": {}, "revoked": {}, "crl_number": 0}
        ca = cls(
            folder=folder,
            base_url=state["base_url"],
            root=root,
            issuing=issuing,
            issuing_key=issuing_key,
            ocsp_cert=ocsp_cert,
            ocsp_key=ocsp_key,
            state=state,
        )
        ca.publish_crl()
        return ca

    @classmethod
    def load(cls, folder: Path | str) -> TestCA:
        folder = Path(folder).resolve()
        state = json.loads((folder / "state.json").read_text())

        def cert(name: str) -> x509.Certificate:
            return x509.load_pem_x509_certificate((folder / name).read_bytes())

        ca = cls(
            folder=folder,
            base_url=state["base_url"],
            root=cert("root.pem"),
            issuing=cert("issuing.pem"),
            issuing_key=_load_pem_key(folder / "issuing.key"),
            ocsp_cert=cert("ocsp.pem"),
            ocsp_key=_load_pem_key(folder / "ocsp.key"),
            state=state,
        )
        ca.reload()  # the stamp of what was read (read again: it may have changed meanwhile)
        return ca

    @classmethod
    def open(cls, folder: Path | str, *, base_url: str) -> TestCA:
        """Load the authority in ``folder``, creating it first if there is none."""
        if (Path(folder) / "state.json").exists():
            return cls.load(folder)
        return cls.create(folder, base_url=base_url)

    def _state_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.folder / "state.json")
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> bool:
        """Read ``state.json`` again if another process changed it (revoked or issued a card,
        published a CRL) since this object last read or wrote it. Call with the lock held or not.
        """
        with self._lock:
            stamp = self._state_stamp()
            if stamp is None or stamp == self._stamp:
                return False
            self.state = json.loads((self.folder / "state.json").read_text())
            self._stamp = stamp
            return True

    def _save(self) -> None:
        tmp = self.folder / f"state.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.folder / "state.json")
        self._stamp = self._state_stamp()

    @property
    def trust_anchors(self) -> Path:
        return self.folder / "trust-anchors.pem"

    @property
    def crl_url(self) -> str:
        return f"{self.base_url}/crl/issuing.crl"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"

    # -- certificates --

    def issue_certificate(
        self,
        public_key: Any,
        *,
        given_name: str,
        family_name: str,
        serial_number: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        usage: x509.KeyUsage | None = None,
        eku: list[x509.ObjectIdentifier] | None = None,
        client_auth: bool = False,
        issuer_key: Any = None,
        issuer_name: x509.Name | None = None,
    ) -> x509.Certificate:
        """A card's authentication certificate for ``public_key``.

        The keyword arguments make the bad certificates that tests need (expired, wrong usage …);
        ``eku`` replaces the default (none, or client authentication with ``client_auth``).
        """
        not_before = not_before or _now() - dt.timedelta(minutes=5)
        not_after = not_after or not_before + CARD_VALIDITY
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "LU"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{given_name} {family_name}"),
                x509.NameAttribute(NameOID.SURNAME, family_name),
                x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
                x509.NameAttribute(
                    NameOID.SERIAL_NUMBER, serial_number or f"LT{secrets.randbelow(10**12):012d}"
                ),
            ]
        )
        signer = issuer_key or self.issuing_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name or self.issuing.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage or key_usage(digital_signature=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(self.ocsp_url),
                        ),
                    ]
                ),
                critical=False,
            )
        )
        usages = (
            eku if eku is not None else ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(signer, hashes.SHA256())
        if issuer_key is None:
            with self._lock:
                self.reload()  # another process may have issued or revoked meanwhile
                self.state["issued"][format(cert.serial_number, "x")] = subject.rfc4514_string()
                self._save()
        return cert

    def issue_card(
        self,
        hsm: SoftHSM,
        *,
        given_name: str,
        family_name: str,
        label: str | None = None,
        user_pin: str | None = None,
        so_pin: str | None = None,
        key_type: str = "ec",
        **certificate_options: Any,
    ) -> Card:
        """Personalise a new card: a token, a key pair generated on it, the certificate on it.

        ``key_type``: ``ec`` (P-256, the default), ``ec-p384``, ``ec-p521`` or ``rsa`` (2048 bits).
        """
        from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
        from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
        from pkcs11.util.rsa import encode_rsa_public_key

        label = label or f"card-{secrets.token_hex(4)}"
        user_pin = user_pin or f"{secrets.randbelow(10**6):06d}"
        so_pin = so_pin or secrets.token_hex(8)
        hsm.init_token(label, so_pin=so_pin, user_pin=user_pin)
        key_id = b"\x01"
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DERIVE: False,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
        with hsm.session(label, user_pin=user_pin, rw=True) as session:
            if key_type.startswith("ec"):
                curve = {"ec": "secp256r1", "ec-p384": "secp384r1", "ec-p521": "secp521r1"}[
                    key_type
                ]
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)},
                    local=True,
                )
                public, _private = params.generate_keypair(
                    store=True,
                    id=key_id,
                    label="Authentication",
                    public_template=public_template,
                    private_template=private_template,
                )
                spki = encode_ec_public_key(public)
            elif key_type == "rsa":
                public, _private = session.generate_keypair(
                    KeyType.RSA,
                    2048,
                    store=True,
                    id=key_id,
                    label="Authentication",
                    public_template=public_template,
                    private_template=private_template,
                )
                spki = encode_rsa_public_key(public)
            else:
                raise ValueError(f"unknown key type {key_type!r}")
            public_key = serialization.load_der_public_key(spki)
            cert = self.issue_certificate(
                public_key, given_name=given_name, family_name=family_name, **certificate_options
            )
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.ID: key_id,
                    Attribute.LABEL: "Authentication",
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.ISSUER: cert.issuer.public_bytes(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
            )
        return Card(label, user_pin, so_pin, cert, key_type)

    # -- revocation --

    def revoke(self, serial: int | str, *, reason: str = "key_compromise") -> None:
        """Revoke a certificate and publish a new CRL at once."""
        key = serial if isinstance(serial, str) else format(serial, "x")
        key = key.lower().removeprefix("0x")
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}")
        with self._lock:
            self.reload()
            if key not in self.state["issued"]:
                raise KeyError(f"serial {key} was not issued by this CA")
            self.state["revoked"][key] = {"at": _now().isoformat(), "reason": reason}
            self._save()
            self.publish_crl()

    def publish_crl(
        self, *, validity: dt.timedelta = CRL_VALIDITY
    ) -> x509.CertificateRevocationList:
        with self._lock:
            self.reload()  # what another process revoked belongs in this CRL
            self.state["crl_number"] += 1
            now = _now()
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(self.issuing.subject)
                .last_update(now)
                .next_update(now + validity)
                .add_extension(x509.CRLNumber(self.state["crl_number"]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        self.issuing_key.public_key()
                    ),
                    critical=False,
                )
            )
            for serial, entry in sorted(self.state["revoked"].items()):
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial, 16))
                    .revocation_date(dt.datetime.fromisoformat(entry["at"]))
                    .add_extension(x509.CRLReason(REASONS[entry["reason"]]), critical=False)
                    .build()
                )
            crl = builder.sign(self.issuing_key, hashes.SHA256())
            tmp = self.folder / "issuing.crl.tmp"
            tmp.write_bytes(crl.public_bytes(serialization.Encoding.DER))
            tmp.replace(self.folder / "issuing.crl")
            self._save()
        return crl

    def crl_der(self) -> bytes:
        return (self.folder / "issuing.crl").read_bytes()

    def current_crl(self) -> x509.CertificateRevocationList | None:
        try:
            return x509.load_der_x509_crl(self.crl_der())
        except (FileNotFoundError, ValueError):
            return None

    def refresh_crl(self, *, max_age: dt.timedelta | None = None) -> bool:
        """Publish a new CRL if the current one is older than ``max_age`` — by default half its
        own validity (thisUpdate to nextUpdate) —, or missing or unreadable. True if one was
        published."""
        with self._lock:
            crl = self.current_crl()
            if crl is not None:
                this, until = crl.last_update_utc, crl.next_update_utc
                limit = max_age if max_age is not None else ((until - this) / 2 if until else None)
                if limit is not None and _now() - this < limit:
                    return False
            self.publish_crl()
            return True

    def ocsp_response(self, request_der: bytes) -> bytes:
        """Answer an OCSP request (RFC 6960) for a certificate of the issuing CA."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST
            ).public_bytes(serialization.Encoding.DER)
        expected_key_hash = _issuer_key_hash(self.issuing, request.hash_algorithm)
        serial = format(request.serial_number, "x")
        with self._lock:
            self.reload()  # a card revoked or issued by another process since
            issued = serial in self.state["issued"]
            revoked = self.state["revoked"].get(serial)
        now = _now()
        if request.issuer_key_hash != expected_key_hash or not issued:
            status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif revoked:
            status = ocsp.OCSPCertStatus.REVOKED
            revoked_at = dt.datetime.fromisoformat(revoked["at"])
            reason = REASONS[revoked["reason"]]
        else:
            status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=request.issuer_name_hash,
                issuer_key_hash=request.issuer_key_hash,
                serial_number=request.serial_number,
                algorithm=request.hash_algorithm,
                cert_status=status,
                this_update=now,
                next_update=now + dt.timedelta(hours=1),
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ocsp_cert)
            .certificates([self.ocsp_cert])
        )
        for ext in request.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                builder = builder.add_extension(ext.value, critical=False)
        response = builder.sign(self.ocsp_key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


def _issuer_key_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 6960 CertID.issuerKeyHash: the hash of the issuer's subjectPublicKey bits."""
    digest = hashes.Hash(algorithm)
    digest.update(_subject_public_key_bits(issuer))
    return digest.finalize()


def _subject_public_key_bits(cert: x509.Certificate) -> bytes:
    """The BIT STRING contents of the certificate's SubjectPublicKeyInfo (what OCSP hashes)."""
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise TypeError("unsupported issuer key")


# --- CRL and OCSP over HTTP on loopback ----------------------------------------------------------


class RevocationServer:
    """Serves ``/crl/issuing.crl`` and an OCSP responder at ``/ocsp`` on 127.0.0.1.

    In a thread (tests: ``with RevocationServer(ca, port) as server: …``) or in the foreground
    (``python softhsm/testca.py serve``).
    """

    #: how often the server looks at the CRL's age (it republishes at half its validity)
    CHECK_INTERVAL = 60.0

    def __init__(
        self,
        ca: TestCA,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        check_interval: float = CHECK_INTERVAL,
        crl_max_age: dt.timedelta | None = None,
    ) -> None:
        self.ca = ca
        self.check_interval = check_interval
        self.crl_max_age = crl_max_age
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "testca/1"

            def log_message(self, format: str, *args: Any) -> None:
                if outer.verbose:
                    sys.stderr.write(f"testca: {format % args}\n")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path))
                if self.path == "/crl/issuing.crl":
                    self._send(200, outer.ca.crl_der(), "application/pkix-crl")
                elif self.path.startswith("/ocsp/"):
                    der = base64.b64decode(unquote(self.path[len("/ocsp/") :]))
                    self._send(200, outer.ca.ocsp_response(der), "application/ocsp-response")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def do_POST(self) -> None:
                outer.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 65536))
                if self.path == "/ocsp":
                    self._send(200, outer.ca.ocsp_response(body), "application/ocsp-response")
                else:
                    self._send(404, b"not found\n", "text/plain")

        self.verbose = False
        self.requests: list[tuple[str, str]] = []
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def _refresh(self) -> None:
        try:
            if self.ca.refresh_crl(max_age=self.crl_max_age) and self.verbose:
                sys.stderr.write(f"testca: published CRL {self.ca.state['crl_number']}\n")
        except Exception as exc:  # keep serving; say why
            sys.stderr.write(f"testca: cannot publish a fresh CRL: {exc}\n")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.check_interval):
            self._refresh()

    def start_refresher(self) -> None:
        """Publish a fresh CRL now if the current one is old, then keep it fresh in a thread: a
        demo left running for days keeps answering with a CRL that is not stale."""
        self._refresh()
        self._stop.clear()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="testca-crl", daemon=True
        )
        self._refresher.start()

    def start(self) -> RevocationServer:
        self.start_refresher()
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)
        if self._refresher:
            self._refresher.join(5)

    def __enter__(self) -> RevocationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- command line --------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    ca = TestCA.open(args.folder, base_url=args.base_url)
    print(
        json.dumps(
            {
                "folder": str(ca.folder),
                "trust_anchors": str(ca.trust_anchors),
                "base_url": ca.base_url,
            }
        )
    )
    return 0


def _cmd_issue_card(args: argparse.Namespace) -> int:
    ca = TestCA.load(args.folder)
    hsm = SoftHSM(args.tokens)
    if args.label and args.label in hsm.labels():
        raise SystemExit(f"error: a card labelled {args.label!r} already exists in {hsm.tokens}")
    card = ca.issue_card(
        hsm,
        given_name=args.given_name,
        family_name=args.family_name,
        label=args.label,
        user_pin=args.pin,
        so_pin=args.so_pin,
        key_type=args.key_type,
        client_auth=args.client_auth,
    )
    print(json.dumps({**card.to_dict(), "softhsm2_conf": str(hsm.conf)}))
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    ca = TestCA.load(args.folder)
    ca.revoke(args.serial, reason=args.reason)
    print(json.dumps({"revoked": args.serial.lower(), "crl_number": ca.state["crl_number"]}))
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    ca = TestCA.load(args.folder)
    ca.publish_crl()
    print(json.dumps({"crl_number": ca.state["crl_number"]}))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    ca = TestCA.load(args.folder)
    port = args.port if args.port is not None else int(ca.base_url.rsplit(":", 1)[1].split("/")[0])
    server = RevocationServer(ca, port)
    server.verbose = True
    print(
        f"testca: CRL at http://127.0.0.1:{server.port}/crl/issuing.crl, OCSP at http://127.0.0.1:{server.port}/ocsp",
        file=sys.stderr,
    )
    server.start_refresher()
    with contextlib.suppress(KeyboardInterrupt):
        server.httpd.serve_forever()
    server._stop.set()
    server.httpd.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="testca", description="Test LuxTrust CA and SoftHSM2 cards"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the CA (or keep the one there)")
    p.add_argument("folder", type=Path)
    p.add_argument(
        "--base-url", default="http://127.0.0.1:5081", help="where the CRL and OCSP are served"
    )
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser(
        "issue-card", help="initialise a token, generate a key on it, issue its certificate"
    )
    p.add_argument("folder", type=Path)
    p.add_argument(
        "--tokens", type=Path, required=True, help="SoftHSM2 folder (its own softhsm2.conf)"
    )
    p.add_argument("--given-name", required=True)
    p.add_argument("--family-name", required=True)
    p.add_argument("--label")
    p.add_argument("--pin")
    p.add_argument("--so-pin")
    p.add_argument("--key-type", choices=["ec", "ec-p384", "ec-p521", "rsa"], default="ec")
    p.add_argument("--client-auth", action="store_true", help="add the client-authentication EKU")
    p.set_defaults(func=_cmd_issue_card)

    p = sub.add_parser("revoke", help="revoke a card certificate and publish a new CRL")
    p.add_argument("folder", type=Path)
    p.add_argument("serial", help="hex serial number")
    p.add_argument("--reason", choices=sorted(REASONS), default="key_compromise")
    p.set_defaults(func=_cmd_revoke)

    p = sub.add_parser("crl", help="publish a fresh CRL")
    p.add_argument("folder", type=Path)
    p.set_defaults(func=_cmd_crl)

    p = sub.add_parser("serve", help="serve the CRL and an OCSP responder on 127.0.0.1")
    p.add_argument("folder", type=Path)
    p.add_argument("--port", type=int)
    p.set_defaults(func=_cmd_serve)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
