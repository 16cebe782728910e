"""The card, through PKCS#11: which cards are present, and a Web eID authentication token.

This is the only module of the card agent that talks to the card reader's PKCS#11 module (SoftHSM2
in development and tests, the LuxTrust middleware's module on a professional's computer).

A *card* here is an authentication certificate found on a token: an X.509 certificate object whose
key usage has digitalSignature, beside a private key with the same ``CKA_ID``. A token may carry
several certificates (a LuxTrust card also has a qualified-signature certificate, whose key usage
is nonRepudiation only: it is not listed). Cards are identified by :attr:`CardInfo.card_id`, a
fingerprint of their certificate, which stays the same across re-insertion and slot renumbering.

Every PKCS#11 call is made under one lock (modules are not all thread-safe, and the library is
re-initialised to see cards inserted or removed since the last call). No session outlives a call
of :class:`CardReader`: the PIN is given to ``C_Login`` and forgotten; closing the session logs
the card out.

Public API (used by the agent's pages and by tests):

- :class:`CardReader` — ``cards()``, ``authenticate(card_id, pin, origin=…, nonce=…)``;
- :class:`CardInfo` — what the pages show about a card;
- errors: :class:`CardError` and its subclasses :class:`NoCard`, :class:`WrongPin`,
  :class:`PinBlocked`, :class:`CardFailure`, :class:`ModuleError`; ``.code`` is the agent
  protocol's error code;
- pure helpers: :func:`signing_algorithm`, :func:`signed_data`, :func:`auth_token`,
  :func:`pin_state`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .. import __version__

log = logging.getLogger("authsvc.cardagent")

WEB_EID_FORMAT = "web-eid:1.0"
APP_VERSION = f"https://github.com/authsvc/authsvc/card-agent/{__version__}"

#: JWS algorithm by EC curve; RSA keys sign RS256 (PKCS#1 v1.5 with SHA-256).
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
    "ES512": hashes.SHA512,
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
HASHLIB_NAMES = {hashes.SHA256: "sha256", hashes.SHA384: "sha384", hashes.SHA512: "sha512"}
#: DER DigestInfo prefixes (RFC 8017 §9.2 note 1), for modules without CKM_SHAxxx_RSA_PKCS.
DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
#: PIN lengths the agent passes to a card at all (longer input is refused before the card).
MAX_PIN_LENGTH = 64


# --- errors ---------------------------------------------------------------------------------------


class CardError(Exception):
    """A card operation that did not succeed; :attr:`code` is the agent protocol's error code."""

    code = "card_error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class NoCard(CardError):
    """No usable card, or the chosen card is no longer in the reader."""

    code = "no_card"


class WrongPin(CardError):
    """The card refused the PIN; it counts the attempt.

    :attr:`final_try`: the token says the next wrong PIN blocks it; :attr:`count_low`: it says a
    wrong PIN was entered since the last right one (SoftHSM2 sets this flag and never blocks).
    """

    code = "wrong_pin"

    def __init__(self, description: str, *, final_try: bool = False, count_low: bool = False):
        super().__init__(description)
        self.final_try = final_try
        self.count_low = count_low


class PinBlocked(CardError):
    """The card's PIN is blocked (too many wrong PINs): only the PUK or the issuer unblocks it."""

    code = "pin_blocked"


class CardFailure(CardError):
    """The card or its module failed otherwise (no key for the certificate, unsupported key …)."""

    code = "card_error"


class ModuleError(CardError):
    """The PKCS#11 module cannot be loaded or initialised."""

    code = "module_error"


# --- pure helpers ---------------------------------------------------------------------------------


def signing_algorithm(public_key: Any) -> str:
    """The JWS algorithm the agent signs with for this public key (Web eID's choice)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        try:
            return EC_ALGORITHMS[public_key.curve.name]
        except KeyError:
            raise CardFailure(f"unsupported elliptic curve {public_key.curve.name}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    raise CardFailure(f"unsupported key type {type(public_key).__name__}")


def signed_data(origin: str, nonce: str, algorithm: str) -> bytes:
    """``H(origin) ‖ H(nonce)`` (INTERFACE §4): what the card signs, with ``algorithm``'s hash."""
    name = HASHLIB_NAMES[HASHES[algorithm]]
    return (
        hashlib.new(name, origin.encode("utf-8")).digest()
        + hashlib.new(name, nonce.encode("utf-8")).digest()
    )


def auth_token(certificate: x509.Certificate, algorithm: str, signature: bytes) -> dict[str, str]:
    """The Web eID authentication token (format ``web-eid:1.0``) of INTERFACE §4."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {
        "unverifiedCertificate": base64.b64encode(der).decode("ascii"),
        "algorithm": algorithm,
        "signature": base64.b64encode(signature).decode("ascii"),
        "format": WEB_EID_FORMAT,
        "appVersion": APP_VERSION,
    }


def pin_state(flags: int) -> str:
    """``ok``, ``count_low``, ``final_try`` or ``locked`` from a token's ``CK_TOKEN_INFO`` flags."""
    from pkcs11 import TokenFlag

    if flags & TokenFlag.USER_PIN_LOCKED:
        return "locked"
    if flags & TokenFlag.USER_PIN_FINAL_TRY:
        return "final_try"
    if flags & TokenFlag.USER_PIN_COUNT_LOW:
        return "count_low"
    return "ok"


def card_id(certificate: x509.Certificate) -> str:
    """A card's identifier: the first 128 bits of its certificate's SHA-256 fingerprint, in hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()[:32]


def holder_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str):
        return names[0].value
    given = certificate.subject.get_attributes_for_oid(NameOID.GIVEN_NAME)
    family = certificate.subject.get_attributes_for_oid(NameOID.SURNAME)
    parts = [str(a.value) for a in (*given, *family)]
    return " ".join(parts) or certificate.subject.rfc4514_string()


def _usable_for_authentication(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(usage.digital_signature)


# --- cards ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardInfo:
    """An authentication certificate on a token in the reader."""

    card_id: str
    label: str  # the token's label
    holder: str  # the certificate's common name
    certificate: x509.Certificate
    algorithm: str
    key_id: bytes  # CKA_ID shared by the certificate and its private key
    pin_state: str  # ok | count_low | final_try | locked
    pin_pad: bool  # the PIN is typed on the reader (protected authentication path)

    def to_status(self) -> dict[str, str]:
        """What ``GET /v1/status`` tells a trusted page about the card."""
        return {"id": self.card_id, "label": self.label, "holder": self.holder}


class CardReader:
    """The cards behind one PKCS#11 module, one call at a time.

    :raises ModuleError: the module cannot be loaded or initialised.
    """

    def __init__(self, module: str) -> None:
        import pkcs11

        self.module = module
        self._lock = threading.Lock()
        try:
            self._lib = pkcs11.lib(module)
            self._lib.reinitialize()
        except (pkcs11.PKCS11Error, OSError) as exc:
            raise ModuleError(f"cannot load the PKCS#11 module {module}: {exc}") from None
        log.info(
            "PKCS#11 module %s (%s, %s)",
            module,
            self._lib.manufacturer_id,
            self._lib.library_description,
        )

    # -- listing --

    def cards(self) -> list[CardInfo]:
        """The authentication certificates on the tokens present now (re-read every call)."""
        with self._locked():
            return [info for info, _token in self._scan()]

    def find(self, card_id: str) -> CardInfo:
        """The card with this id, if it is still in the reader.

        :raises NoCard: it is not.
        """
        with self._locked():
            return self._find(card_id)[0]

    # -- signing --

    def authenticate(
        self, card_id: str, pin: str | None, *, origin: str, nonce: str
    ) -> dict[str, str]:
        """Log in to the card with ``pin``, sign ``H(origin) ‖ H(nonce)``, log out.

        ``pin`` is ``None`` only for a card with a PIN pad (the reader asks for it).

        :returns: the Web eID authentication token (:func:`auth_token`).
        :raises NoCard, WrongPin, PinBlocked, CardFailure: see their docstrings.
        """
        import pkcs11
        from pkcs11 import PROTECTED_AUTH

        if pin is not None and not 0 < len(pin) <= MAX_PIN_LENGTH:
            raise WrongPin("The PIN is empty or too long.")
        with self._locked():
            info, token = self._find(card_id)
            if info.pin_state == "locked":
                raise PinBlocked("The card's PIN is blocked.")
            if pin is None and not info.pin_pad:
                raise WrongPin("Enter the card's PIN.")
            data = signed_data(origin, nonce, info.algorithm)
            try:
                with self._login(token, PROTECTED_AUTH if pin is None else pin) as session:
                    signature = self._sign(session, info, data, pin)
            except pkcs11.PinIncorrect:
                state = self._pin_state_after_failure(info)
                if state == "locked":
                    raise PinBlocked("The card's PIN is blocked.") from None
                raise WrongPin(
                    "The card refused the PIN.",
                    final_try=state == "final_try",
                    count_low=state in ("count_low", "final_try"),
                ) from None
            except (pkcs11.PinInvalid, pkcs11.PinLenRange):
                raise WrongPin("The card refused the PIN.") from None
            except pkcs11.PinLocked:
                raise PinBlocked("The card's PIN is blocked.") from None
            except pkcs11.PinExpired:
                raise CardFailure(
                    "The card's PIN has expired: change it with the card's own software."
                ) from None
            except _token_gone_errors():
                raise NoCard("The card was removed from the reader.") from None
            except pkcs11.PKCS11Error as exc:
                log.warning("card %s: %s", info.label, exc.__class__.__name__)
                raise CardFailure(f"The card could not sign ({exc.__class__.__name__}).") from None
        return auth_token(info.certificate, info.algorithm, signature)

    # -- seams (tests replace these on an instance) --

    @contextmanager
    def _login(self, token: Any, pin: Any) -> Iterator[Any]:
        """A logged-in session on ``token``; closing it logs the card out."""
        with token.open(user_pin=pin) as session:
            yield session

    # -- internals (called with the lock held) --

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import pkcs11

        with self._lock:
            try:
                # See cards inserted or removed since the last call; closes leftover sessions.
                self._lib.reinitialize()
            except pkcs11.PKCS11Error as exc:
                raise ModuleError(f"the PKCS#11 module failed: {exc.__class__.__name__}") from None
            yield

    def _scan(self) -> list[tuple[CardInfo, Any]]:
        import pkcs11
        from pkcs11 import TokenFlag

        found: list[tuple[CardInfo, Any]] = []
        try:
            slots = self._lib.get_slots(token_present=True)
        except pkcs11.PKCS11Error as exc:
            raise ModuleError(f"the PKCS#11 module failed: {exc.__class__.__name__}") from None
        for slot in slots:
            try:
                token = slot.get_token()
                if not token.flags & TokenFlag.TOKEN_INITIALIZED:
                    continue  # an empty slot of SoftHSM2, or a blank card
                certificates = self._certificates(token)
            except pkcs11.PKCS11Error as exc:
                log.info("slot %s skipped: %s", slot.slot_id, exc.__class__.__name__)
                continue
            flags = int(token.flags)
            for key_id, certificate in certificates:
                try:
                    algorithm = signing_algorithm(certificate.public_key())
                except (CardFailure, ValueError) as exc:
                    log.info("certificate on %s skipped: %s", token.label, exc)
                    continue
                info = CardInfo(
                    card_id=card_id(certificate),
                    label=token.label,
                    holder=holder_name(certificate),
                    certificate=certificate,
                    algorithm=algorithm,
                    key_id=key_id,
                    pin_state=pin_state(flags),
                    pin_pad=bool(flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
                )
                found.append((info, token))
        return found

    def _certificates(self, token: Any) -> list[tuple[bytes, x509.Certificate]]:
        """The authentication certificates of a token (public objects: no login needed)."""
        import pkcs11
        from pkcs11 import Attribute, CertificateType, ObjectClass

        result = []
        with token.open() as session:
            for obj in session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                }
            ):
                try:
                    der = obj[Attribute.VALUE]
                    key_id = obj[Attribute.ID]
                    certificate = x509.load_der_x509_certificate(der)
                except (pkcs11.PKCS11Error, ValueError):
                    continue
                if _usable_for_authentication(certificate):
                    result.append((bytes(key_id), certificate))
        return result

    def _find(self, wanted: str) -> tuple[CardInfo, Any]:
        for info, token in self._scan():
            if info.card_id == wanted:
                return info, token
        raise NoCard("The card is not in the reader.")

    def _pin_state_after_failure(self, info: CardInfo) -> str:
        """The PIN state the card reports after a wrong PIN (its flags have just changed)."""
        import pkcs11

        try:
            self._lib.reinitialize()
            for other, _token in self._scan():
                if other.card_id == info.card_id:
                    return other.pin_state
        except (pkcs11.PKCS11Error, CardError):
            pass
        return "count_low"

    def _sign(self, session: Any, info: CardInfo, data: bytes, pin: str | None) -> bytes:
        import pkcs11
        from pkcs11 import Attribute, Mechanism, ObjectClass

        keys = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: info.key_id}
            )
        )
        if not keys:
            raise CardFailure("The card has no private key for its authentication certificate.")
        key = keys[0]
        try:
            always_authenticate = bool(key[Attribute.ALWAYS_AUTHENTICATE])
        except pkcs11.PKCS11Error:
            always_authenticate = False
        context_pin = pin if always_authenticate and pin is not None else None
        hash_name = HASHLIB_NAMES[HASHES[info.algorithm]]
        if info.algorithm.startswith("ES"):
            digest = hashlib.new(hash_name, data).digest()
            signature = bytes(key.sign(digest, mechanism=Mechanism.ECDSA, pin=context_pin))
            public = info.certificate.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            size = (public.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                raise CardFailure("The card's ECDSA signature does not have the expected size.")
            return signature
        mechanism = {
            "sha256": Mechanism.SHA256_RSA_PKCS,
            "sha384": Mechanism.SHA384_RSA_PKCS,
            "sha512": Mechanism.SHA512_RSA_PKCS,
        }[hash_name]
        try:
            return bytes(key.sign(data, mechanism=mechanism, pin=context_pin))
        except pkcs11.MechanismInvalid:
            # Some card modules only do raw PKCS#1 v1.5: hash here and send the DigestInfo.
            digest_info = DIGEST_INFO[hash_name] + hashlib.new(hash_name, data).digest()
            return bytes(key.sign(digest_info, mechanism=Mechanism.RSA_PKCS, pin=context_pin))


def _token_gone_errors() -> tuple[type[Exception], ...]:
    import pkcs11

    return (
        pkcs11.TokenNotPresent,
        pkcs11.TokenNotRecognised,
        pkcs11.DeviceRemoved,
        pkcs11.SessionClosed,
        pkcs11.SessionHandleInvalid,
        pkcs11.SlotIDInvalid,
        pkcs11.NoSuchToken,
    )
