"""Revocation of card certificates: CRL and OCSP, failing closed (``AUTHSVC_CARD_REVOCATION``).

INTERFACE §1: ``crl`` reads the CRLs named by the certificate's CRL Distribution Points (``http:``
or ``file:``), ``ocsp`` asks the responder named by its Authority Information Access, ``crl+ocsp``
does both (each must answer "not revoked"), ``none`` does nothing (development only; the app warns
at start). SECURITY "Smartcard" makes CRL/OCSP part of the certificate checks, so whatever cannot
be checked is refused: an unreachable source, an HTTP error, a bad signature, stale data, an
answer about another certificate — all refuse with ``revocation_unavailable``, and the log says
which URL and what failed so that an operator can act.

CRLs (:class:`CrlChecker`) are verified against the issuing CA the chain was built with, and cached
per (URL, issuing CA) until ``min(nextUpdate, fetched_at + AUTHSVC_CRL_MAX_AGE)``; a CRL past its
``nextUpdate`` is never used. The revoked serial numbers are kept in a ``frozenset`` built once
per fetch (a lookup is ~0.4 µs, PERFORMANCE "Limits to know"). One fetch per URL runs at a time
(gunicorn threads wait for it and share its result), and a failed fetch is not retried for
``failure_backoff`` seconds, so that a CRL server that is down does not make every sign-in wait
for its timeout.

OCSP (:class:`OcspChecker`) is asked for every verification (it exists to give the current status);
the request is built with ``cryptography.x509.ocsp`` (SHA-1 CertID as RFC 6960 responders expect,
with a nonce), POSTed as ``application/ocsp-request``; the response must be signed by the issuing
CA or by a responder certificate that CA issued with the OCSPSigning EKU, must be about this
certificate (CertID), echo the nonce if it carries one, and be fresh (thisUpdate not in the future
beyond a small skew; nextUpdate, when present, not past).
"""

from __future__ import annotations

import http.client
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ..clock import Clock
from ..metrics import revocation_check, revocation_fetch
from .errors import Reason, refuse, serial_hex

#: ≈5 s per source (the brief of issue "smartcard"): a sign-in should not hang on a slow CA.
DEFAULT_TIMEOUT = 5.0
#: A country's CRL can be a few megabytes; this bounds memory, not the CA.
MAX_CRL_BYTES = 32 * 1024 * 1024
MAX_OCSP_BYTES = 1024 * 1024
#: Clocks differ: a thisUpdate this far in the future is still believed.
ALLOWED_SKEW = timedelta(minutes=5)
#: An OCSP answer without nextUpdate ("newer information is always available") must be this fresh.
OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(minutes=5)
#: After a failed CRL fetch, the same URL is not fetched again for this long (fail fast meanwhile).
DEFAULT_FAILURE_BACKOFF = timedelta(seconds=10)

REVOCATION_SCHEMES = ("http", "https", "file")
OCSP_SCHEMES = ("http", "https")


class RevocationChecker(Protocol):
    """Says whether a certificate, whose chain has been verified, is revoked.

    Returns if it is not; raises ``CardRefused`` (``revoked_crl``, ``revoked_ocsp`` or
    ``revocation_unavailable``) otherwise.
    """

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> None: ...


class Unavailable(Exception):
    """A revocation source could not give a usable answer; the message is for operators."""


# --- fetching ------------------------------------------------------------------------------------


def _opener() -> urllib.request.OpenerDirector:
    """http and https only (redirects included), honouring the usual proxy variables."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _opener()


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    body: bytes | None = None,
    content_type: str | None = None,
    accept: str | None = None,
) -> bytes:
    """GET (or POST ``body`` to) an ``http(s):`` URL, or read a ``file:`` URL.

    Any failure raises :class:`Unavailable`, with the URL and what went wrong.

    ``timeout`` bounds the whole exchange, not only each socket operation, and the answer may not
    exceed ``max_bytes``.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise Unavailable(f"{url}: file: URLs on another host are not supported")
        path = url2pathname(parts.path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise Unavailable(f"{url}: cannot read {path}: {exc.strerror or exc}") from None
    elif parts.scheme in ("http", "https"):
        headers = {"User-Agent": "authsvc"}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(  # noqa: S310 - scheme checked just above
            url, data=body, headers=headers, method="POST" if body is not None else "GET"
        )
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        size = 0
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                while chunk := response.read1(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise Unavailable(f"{url}: the answer is larger than {max_bytes} bytes")
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise Unavailable(f"{url}: no complete answer within {timeout:g} s")
        except urllib.error.HTTPError as exc:
            exc.close()
            raise Unavailable(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise Unavailable(f"{url}: unreachable: {exc.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise Unavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        data = b"".join(chunks)
    else:
        raise Unavailable(f"{url}: unsupported URL scheme {parts.scheme!r}")
    if len(data) > max_bytes:
        raise Unavailable(f"{url}: the answer is larger than {max_bytes} bytes")
    return data


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (serial {serial_hex(cert.serial_number)})"


def _identity(cert: x509.Certificate) -> bytes:
    """Tells certificates apart cheaply: the signature covers all of the certificate's content."""
    return cert.signature


# --- none ----------------------------------------------------------------------------------------


class NoRevocationCheck:
    """``AUTHSVC_CARD_REVOCATION=none``: development only (the app warns at start)."""

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> None:
        return None


# --- CRL -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedCrl:
    """A verified CRL, reduced to what a lookup needs."""

    url: str
    revoked: frozenset[int]
    this_update: datetime
    next_update: datetime
    fetched_at: datetime
    #: min(nextUpdate, fetched_at + AUTHSVC_CRL_MAX_AGE): the entry is used strictly before this
    reuse_until: datetime
    crl_number: int | None


@dataclass(frozen=True)
class _Failure:
    message: str
    retry_at: datetime


def _distribution_points(cert: x509.Certificate) -> list[tuple[str, x509.DistributionPoint]]:
    """The fetchable URLs of the certificate's CRL Distribution Points, in order."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls = []
    for point in points:
        # A point with its own CRL issuer (indirect CRL) or covering only some reasons cannot,
        # on its own, say that the certificate is not revoked: not used.
        if point.crl_issuer or point.reasons or not point.full_name:
            continue
        for name in point.full_name:
            if (
                isinstance(name, x509.UniformResourceIdentifier)
                and urlsplit(name.value).scheme.lower() in REVOCATION_SCHEMES
            ):
                urls.append((name.value, point))
    return urls


class CrlChecker:
    """``AUTHSVC_CARD_REVOCATION=crl``: the certificate's CRLs, verified, cached (module docstring).

    :param clock: the time of freshness and caching decisions.
    :param max_age: ``AUTHSVC_CRL_MAX_AGE``, seconds a fetched CRL may be reused (never past its
        nextUpdate); 0 fetches for every check.
    :param timeout: seconds one fetch may take.
    :param failure_backoff: after a failed fetch, the same source refuses at once for this long.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_age: float,
        timeout: float = DEFAULT_TIMEOUT,
        failure_backoff: timedelta = DEFAULT_FAILURE_BACKOFF,
        max_bytes: int = MAX_CRL_BYTES,
    ) -> None:
        self._clock = clock
        self._max_age = timedelta(seconds=max_age)
        self._timeout = timeout
        self._backoff = failure_backoff
        self._max_bytes = max_bytes
        self._cache: dict[tuple[str, bytes], CachedCrl] = {}
        self._failures: dict[tuple[str, bytes], _Failure] = {}
        self._locks: dict[tuple[str, bytes], threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @revocation_check("crl")
    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> None:
        """Refuse if a CRL of the certificate lists it, or if none of its CRLs can be used."""
        points = _distribution_points(certificate)
        if not points:
            raise refuse(
                Reason.REVOCATION_UNAVAILABLE,
                detail="the certificate names no usable CRL distribution point (http:, https: "
                "or file:, complete, direct); set AUTHSVC_CARD_REVOCATION to ocsp if its CA "
                "publishes only OCSP",
                certificate=certificate,
            )
        problems = []
        for url, point in points:
            try:
                crl = self.crl_for(url, point, issuer)
            except Unavailable as exc:
                problems.append(str(exc))
                continue
            if certificate.serial_number in crl.revoked:
                raise refuse(
                    Reason.REVOKED_CRL,
                    detail=f"listed in the CRL at {url} (CRL number {crl.crl_number}, "
                    f"thisUpdate {crl.this_update.isoformat()})",
                    certificate=certificate,
                )
            return
        raise refuse(
            Reason.REVOCATION_UNAVAILABLE,
            detail="no usable CRL: " + "; ".join(problems),
            certificate=certificate,
        )

    def crl_for(
        self, url: str, point: x509.DistributionPoint, issuer: x509.Certificate
    ) -> CachedCrl:
        """The CRL of ``url`` signed by ``issuer``: cached, or fetched when it may not be reused."""
        key = (url, _identity(issuer))
        entry = self._cache.get(key)
        if entry is not None and self._clock.now() < entry.reuse_until:
            return entry
        with self._lock_for(key):
            # Another thread may have fetched it while this one waited.
            now = self._clock.now()
            entry = self._cache.get(key)
            if entry is not None and now < entry.reuse_until:
                return entry
            self._cache.pop(key, None)  # past its reuse time: never used again
            failure = self._failures.get(key)
            if failure is not None and now < failure.retry_at:
                raise Unavailable(
                    f"{failure.message} (failed recently; next attempt after "
                    f"{failure.retry_at.isoformat()})"
                )
            try:
                entry = self._fetch(url, point, issuer, now)
            except Unavailable as exc:
                self._failures[key] = _Failure(str(exc), now + self._backoff)
                raise
            self._failures.pop(key, None)
            self._cache[key] = entry
            return entry

    def _lock_for(self, key: tuple[str, bytes]) -> threading.Lock:
        with self._locks_lock:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    @revocation_fetch("crl")
    def _fetch(
        self, url: str, point: x509.DistributionPoint, issuer: x509.Certificate, now: datetime
    ) -> CachedCrl:
        data = fetch(url, timeout=self._timeout, max_bytes=self._max_bytes)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
        except ValueError as exc:
            raise Unavailable(f"{url}: not a CRL ({exc})") from None
        try:
            return self._verify(url, point, crl, issuer, now)
        except Unavailable:
            raise
        except Exception as exc:  # fetched over plain HTTP: whatever breaks, fail closed
            raise Unavailable(f"{url}: unusable CRL: {type(exc).__name__}: {exc}") from None

    def _verify(
        self,
        url: str,
        point: x509.DistributionPoint,
        crl: x509.CertificateRevocationList,
        issuer: x509.Certificate,
        now: datetime,
    ) -> CachedCrl:
        # RFC 5280 §6.3.3: issued and signed by the certificate's issuer, who may sign CRLs
        if crl.issuer != issuer.subject:
            raise Unavailable(
                f"{url}: the CRL is issued by {crl.issuer.rfc4514_string()}, "
                f"not by the certificate's issuer {issuer.subject.rfc4514_string()}"
            )
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.crl_sign:
            raise Unavailable(f"{url}: the issuing CA's keyUsage does not allow cRLSign")
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise Unavailable(
                f"{url}: the CRL's signature does not verify with the key of {_describe(issuer)}"
            )
        # freshness: a CRL without nextUpdate, from the future or past its nextUpdate is not used
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
        if next_update is None:
            raise Unavailable(f"{url}: the CRL has no nextUpdate (RFC 5280 requires one)")
        if this_update > now + ALLOWED_SKEW:
            raise Unavailable(
                f"{url}: the CRL's thisUpdate {this_update.isoformat()} is in the future "
                f"(now {now.isoformat()}): check the clocks"
            )
        if now >= next_update:
            raise Unavailable(
                f"{url}: the CRL is stale: its nextUpdate {next_update.isoformat()} has passed "
                f"(now {now.isoformat()}); the CA has not published a newer one there"
            )
        # scope: a complete CRL for end-entity certificates of this distribution point
        crl_number = None
        for extension in crl.extensions:
            value = extension.value
            if isinstance(value, x509.CRLNumber):
                crl_number = value.crl_number
            elif isinstance(value, x509.DeltaCRLIndicator):
                raise Unavailable(f"{url}: a delta CRL, not a complete one")
            elif isinstance(value, x509.IssuingDistributionPoint):
                if (
                    value.only_contains_ca_certs
                    or value.only_contains_attribute_certs
                    or value.only_some_reasons
                    or value.indirect_crl
                ):
                    raise Unavailable(f"{url}: the CRL covers only part of the certificates")
                if (
                    value.full_name
                    and point.full_name
                    and not set(value.full_name) & set(point.full_name)
                ):
                    raise Unavailable(
                        f"{url}: the CRL is for another distribution point than the certificate's"
                    )
            elif extension.critical:
                raise Unavailable(
                    f"{url}: the CRL has an unknown critical extension {extension.oid}"
                )
        revoked = frozenset(entry.serial_number for entry in crl)
        return CachedCrl(
            url=url,
            revoked=revoked,
            this_update=this_update,
            next_update=next_update,
            fetched_at=now,
            reuse_until=min(next_update, now + self._max_age),
            crl_number=crl_number,
        )


# --- OCSP ----------------------------------------------------------------------------------------


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        description.access_location.value
        for description in access
        if description.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(description.access_location, x509.UniformResourceIdentifier)
        and urlsplit(description.access_location.value).scheme.lower() in OCSP_SCHEMES
    ]


def _cert_id(
    cert: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of ``cert``'s CertID with ``algorithm`` (RFC 6960 §4.1.1)."""
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Does the response's ResponderID name ``cert`` (by name or by key hash)?"""
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    key_id = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    return response.responder_key_hash == key_id.digest


def _verify_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    data, signature = response.tbs_response_bytes, response.signature
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            if response.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS:
                raise Unavailable("RSASSA-PSS signed OCSP responses are not supported")
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise Unavailable(f"unsupported responder key {type(key).__name__}")
    except InvalidSignature:
        raise Unavailable(
            f"the response's signature does not verify with {_describe(signer)}"
        ) from None


class OcspChecker:
    """``AUTHSVC_CARD_REVOCATION=ocsp``: ask the certificate's OCSP responder (module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_age_without_next_update: timedelta = OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE,
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._max_age = max_age_without_next_update

    @revocation_check("ocsp")
    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> None:
        """Refuse if the responder says revoked, or if no responder gives a usable answer."""
        urls = _ocsp_urls(certificate)
        if not urls:
            raise refuse(
                Reason.REVOCATION_UNAVAILABLE,
                detail="the certificate names no OCSP responder (AIA id-ad-ocsp, http: or "
                "https:); set AUTHSVC_CARD_REVOCATION to crl if its CA publishes only CRLs",
                certificate=certificate,
            )
        nonce = secrets.token_bytes(16)
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuer, hashes.SHA1())  # noqa: S303 - CertID, RFC 6960
            .add_extension(x509.OCSPNonce(nonce), critical=False)
            .build()
        )
        body = request.public_bytes(Encoding.DER)
        problems = []
        for url in urls:
            try:
                single = self._ask(url, body, nonce, certificate, issuer)
            except Unavailable as exc:
                problems.append(str(exc))
                continue
            if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                when = single.revocation_time_utc
                why = single.revocation_reason
                raise refuse(
                    Reason.REVOKED_OCSP,
                    detail=f"{url} answers revoked"
                    + (f" at {when.isoformat()}" if when else "")
                    + (f" ({why.value})" if why else ""),
                    certificate=certificate,
                )
            return
        raise refuse(
            Reason.REVOCATION_UNAVAILABLE,
            detail="no usable OCSP answer: " + "; ".join(problems),
            certificate=certificate,
        )

    @revocation_fetch("ocsp")
    def _ask(
        self,
        url: str,
        body: bytes,
        nonce: bytes,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
    ) -> ocsp.OCSPSingleResponse:
        data = fetch(
            url,
            timeout=self._timeout,
            max_bytes=MAX_OCSP_BYTES,
            body=body,
            content_type="application/ocsp-request",
            accept="application/ocsp-response",
        )
        try:
            return self._interpret(url, data, nonce, certificate, issuer)
        except Unavailable:
            raise
        except Exception as exc:  # fetched over plain HTTP: whatever breaks, fail closed
            raise Unavailable(f"{url}: unusable response: {type(exc).__name__}: {exc}") from None

    def _interpret(
        self,
        url: str,
        data: bytes,
        nonce: bytes,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
    ) -> ocsp.OCSPSingleResponse:
        try:
            response = ocsp.load_der_ocsp_response(data)
        except ValueError as exc:
            raise Unavailable(f"{url}: not an OCSP response ({exc})") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise Unavailable(f"{url}: the responder answers {response.response_status.name}")
        now = self._clock.now()
        try:
            signer = self._signer(response, issuer, now)
            _verify_signature(response, signer)
        except Unavailable as exc:
            raise Unavailable(f"{url}: {exc}") from None
        try:
            echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None  # many responders pre-produce answers: freshness is checked below
        if echoed is not None and echoed != nonce:
            raise Unavailable(f"{url}: the response answers another request (nonce mismatch)")
        single = self._single_for(response, certificate, issuer)
        if single is None:
            raise Unavailable(f"{url}: the response is not about {_describe(certificate)}")
        this_update, next_update = single.this_update_utc, single.next_update_utc
        if this_update > now + ALLOWED_SKEW:
            raise Unavailable(
                f"{url}: thisUpdate {this_update.isoformat()} is in the future "
                f"(now {now.isoformat()}): check the clocks"
            )
        if next_update is None:
            if this_update < now - self._max_age:
                raise Unavailable(
                    f"{url}: stale answer: thisUpdate {this_update.isoformat()} and no nextUpdate"
                )
        elif next_update < this_update or now >= next_update:
            raise Unavailable(f"{url}: stale answer: nextUpdate {next_update.isoformat()}")
        if single.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
            raise Unavailable(f"{url}: the responder does not know {_describe(certificate)}")
        return single

    @staticmethod
    def _signer(
        response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime
    ) -> x509.Certificate:
        """The issuing CA, or a responder it delegated OCSP signing to (RFC 6960 §4.2.2.2)."""
        if _is_responder(response, issuer):
            return issuer
        for candidate in response.certificates:
            if not _is_responder(response, candidate):
                continue
            try:
                candidate.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise Unavailable(
                    f"the responder certificate {_describe(candidate)} is not issued by "
                    f"{_describe(issuer)}"
                ) from None
            try:
                eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                eku = None
            if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise Unavailable(
                    f"the responder certificate {_describe(candidate)} lacks the OCSPSigning EKU"
                )
            if not candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc:
                raise Unavailable(
                    f"the responder certificate {_describe(candidate)} is not valid now"
                )
            return candidate
        raise Unavailable("signed by a responder that is neither the CA nor delegated by it")

    @staticmethod
    def _single_for(
        response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
    ) -> ocsp.OCSPSingleResponse | None:
        ids: dict[str, tuple[bytes, bytes]] = {}
        for single in response.responses:
            if single.serial_number != certificate.serial_number:
                continue
            algorithm = single.hash_algorithm
            if algorithm.name not in ids:
                try:
                    ids[algorithm.name] = _cert_id(certificate, issuer, algorithm)
                except ValueError:  # a hash the CertID builder does not offer
                    continue
            if (single.issuer_name_hash, single.issuer_key_hash) == ids[algorithm.name]:
                return single
        return None


# --- both, and the factory -----------------------------------------------------------------------


class AllOf:
    """``crl+ocsp``: every check must say "not revoked" (the first to refuse decides)."""

    def __init__(self, checkers: Sequence[RevocationChecker]) -> None:
        self.checkers = tuple(checkers)

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> None:
        for checker in self.checkers:
            checker.check(certificate, issuer)


def revocation_checker(
    mode: str,
    *,
    clock: Clock,
    crl_max_age: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> RevocationChecker:
    """The checker of an ``AUTHSVC_CARD_REVOCATION`` value (crl, ocsp, crl+ocsp or none)."""
    if mode == "none":
        return NoRevocationCheck()
    if mode == "crl":
        return CrlChecker(clock, max_age=crl_max_age, timeout=timeout)
    if mode == "ocsp":
        return OcspChecker(clock, timeout=timeout)
    if mode == "crl+ocsp":
        return AllOf(
            [
                CrlChecker(clock, max_age=crl_max_age, timeout=timeout),
                OcspChecker(clock, timeout=timeout),
            ]
        )
    raise ValueError(f"unknown revocation mode {mode!r}")


__all__ = [
    "AllOf",
    "CachedCrl",
    "CrlChecker",
    "NoRevocationCheck",
    "OcspChecker",
    "RevocationChecker",
    "Unavailable",
    "fetch",
    "revocation_checker",
]
