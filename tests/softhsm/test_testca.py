"""The test card authority and its cards: what the rest of the smartcard tests stand on."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from softhsm.testca import Card, RevocationServer, SoftHSM, TestCA


def test_chain(test_ca: TestCA, card: Card) -> None:
    root, issuing, leaf = test_ca.root, test_ca.issuing, card.certificate
    assert root.subject == root.issuer
    issuing.verify_directly_issued_by(root)
    leaf.verify_directly_issued_by(issuing)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    dp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value == test_ca.crl_url
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == test_ca.ocsp_url
    anchors = x509.load_pem_x509_certificates(test_ca.trust_anchors.read_bytes())
    assert anchors == [root, issuing]


def test_client_auth_option(make_card: Callable[..., Card]) -> None:
    card = make_card(client_auth=True)
    eku = card.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_key_is_on_the_token_and_cannot_leave_it(
    softhsm: SoftHSM, make_card: Callable[..., Card], key_type: str
) -> None:
    card = make_card(key_type=key_type)
    with softhsm.session(card.label, user_pin=card.user_pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"\x01")
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.LOCAL] is True  # generated on the token
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.PRIVATE_EXPONENT if key_type == "rsa" else Attribute.VALUE]
        # the certificate on the token is the one issued for this key
        (cert_obj,) = session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
        der = cert_obj[Attribute.VALUE]
        assert x509.load_der_x509_certificate(der) == card.certificate
        # and the key signs: the certificate's public key verifies it
        data = b"challenge"
        public = card.certificate.public_key()
        if key_type == "ec":
            digest = hashes.Hash(hashes.SHA256())
            digest.update(data)
            raw = key.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
            r, s = int.from_bytes(raw[:32]), int.from_bytes(raw[32:])
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        else:
            sig = key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        assert key.key_type in (KeyType.EC, KeyType.RSA)


def test_wrong_pin_is_refused(softhsm: SoftHSM, card: Card) -> None:
    with (
        pytest.raises(pkcs11.exceptions.PinIncorrect),
        softhsm.session(card.label, user_pin="000000"),
    ):
        pass


def fetch(url: str, data: bytes | None = None, ctype: str | None = None) -> bytes:
    request = urllib.request.Request(url, data=data)
    if ctype:
        request.add_header("Content-Type", ctype)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def ocsp_status(test_ca: TestCA, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, test_ca.issuing, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    response = ocsp.load_der_ocsp_response(
        fetch(test_ca.ocsp_url, request, "application/ocsp-request")
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    responder = response.certificates[0]
    assert responder == test_ca.ocsp_cert
    responder.public_key().verify(  # type: ignore[union-attr, call-arg]
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),  # type: ignore[arg-type]
    )
    assert response.serial_number == cert.serial_number
    return response.certificate_status


def test_revocation_is_published_by_crl_and_ocsp(
    test_ca: TestCA, revocation_server: RevocationServer, make_card: Callable[..., Card]
) -> None:
    card = make_card()
    crl = x509.load_der_x509_crl(fetch(test_ca.crl_url))
    assert crl.is_signature_valid(test_ca.issuing.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(card.serial) is None
    assert ocsp_status(test_ca, card.certificate) is ocsp.OCSPCertStatus.GOOD

    test_ca.revoke(card.serial, reason="key_compromise")
    crl2 = x509.load_der_x509_crl(fetch(test_ca.crl_url))
    assert crl2.is_signature_valid(test_ca.issuing.public_key())  # type: ignore[arg-type]
    entry = crl2.get_revoked_certificate_by_serial_number(card.serial)
    assert entry is not None
    crl_number = crl2.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl_number > crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert ocsp_status(test_ca, card.certificate) is ocsp.OCSPCertStatus.REVOKED


def test_ocsp_unknown_for_certificates_it_did_not_issue(
    test_ca: TestCA, revocation_server: RevocationServer
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stranger = test_ca.issue_certificate(
        key.public_key(), given_name="X", family_name="Y", issuer_key=key
    )
    assert ocsp_status(test_ca, stranger) is ocsp.OCSPCertStatus.UNKNOWN


def test_load_gives_the_same_ca(test_ca: TestCA) -> None:
    again = TestCA.load(test_ca.folder)
    assert again.root == test_ca.root
    assert again.base_url == test_ca.base_url


def test_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from softhsm.testca import main

    folder = tmp_path / "ca"
    assert main(["init", str(folder), "--base-url", "http://127.0.0.1:1"]) == 0
    assert (
        main(
            [
                "issue-card",
                str(folder),
                "--tokens",
                str(tmp_path / "hsm"),
                "--given-name",
                "A",
                "--family-name",
                "B",
                "--label",
                "x",
                "--pin",
                "1234",
            ]
        )
        == 0
    )
    assert SoftHSM(tmp_path / "hsm").labels() == ["x"]
    assert main(["revoke", str(folder), "ffff"]) == 1  # never issued


# --- a CA shared between processes, and a CRL that stays fresh ----------------------------------


def _certificate(ca: TestCA) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return ca.issue_certificate(key.public_key(), given_name="Anne", family_name="Muller")


def _ocsp_status(ca: TestCA, cert: x509.Certificate) -> ocsp.OCSPCertStatus:
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, ca.issuing, hashes.SHA256())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    return ocsp.load_der_ocsp_response(ca.ocsp_response(request)).certificate_status


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_ocsp_sees_what_another_process_revoked_and_issued(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The revocation server's CA object answers from state.json as it is now, not as it was
    when it was loaded: `testca.py revoke` runs in another process."""
    serving = TestCA.create(tmp_path / "ca", base_url="http://127.0.0.1:1")
    card = _certificate(serving)
    assert _ocsp_status(serving, card) is ocsp.OCSPCertStatus.GOOD

    other = TestCA.load(serving.folder)  # another process
    issued_elsewhere = _certificate(other)
    other.revoke(card.serial_number)

    assert _ocsp_status(serving, card) is ocsp.OCSPCertStatus.REVOKED
    assert _ocsp_status(serving, issued_elsewhere) is ocsp.OCSPCertStatus.GOOD  # not "unknown"
    # and a CRL published by the serving process keeps what the other one did
    crl = serving.publish_crl()
    assert crl.get_revoked_certificate_by_serial_number(card.serial_number) is not None
    assert (
        format(issued_elsewhere.serial_number, "x") in TestCA.load(serving.folder).state["issued"]
    )


def test_revocation_by_the_command_line_reaches_the_running_responder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    serving = TestCA.create(tmp_path / "ca", base_url="http://127.0.0.1:1")
    card = _certificate(serving)
    script = Path(__file__).resolve().parents[2] / "softhsm" / "testca.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "revoke",
            str(serving.folder),
            format(card.serial_number, "x"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _ocsp_status(serving, card) is ocsp.OCSPCertStatus.REVOKED


def test_the_server_publishes_a_fresh_crl_when_the_current_one_is_old(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    import softhsm.testca as testca

    ca = TestCA.create(tmp_path / "ca", base_url="http://127.0.0.1:1")
    real_now = testca._now
    monkeypatch.setattr(testca, "_now", lambda: real_now() - dt.timedelta(hours=13))
    old = ca.publish_crl()  # published 13 hours ago: more than half of its day
    monkeypatch.setattr(testca, "_now", real_now)
    with RevocationServer(ca, check_interval=3600) as server:
        served = x509.load_der_x509_crl(fetch(f"http://127.0.0.1:{server.port}/crl/issuing.crl"))
    assert _crl_number(served) > _crl_number(old)
    assert real_now() - served.last_update_utc < dt.timedelta(minutes=1)

    # a CRL that is still young is kept
    with RevocationServer(ca, check_interval=3600):
        pass
    assert _crl_number(ca.current_crl()) == _crl_number(served)  # type: ignore[arg-type]


def test_the_server_keeps_republishing_while_it_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt
    import time

    ca = TestCA.create(tmp_path / "ca", base_url="http://127.0.0.1:1")
    first = _crl_number(ca.current_crl())  # type: ignore[arg-type]
    # "half the validity" made tiny, so that every check finds the CRL old
    with RevocationServer(ca, check_interval=0.05, crl_max_age=dt.timedelta(seconds=0)):
        deadline = time.monotonic() + 10
        while _crl_number(ca.current_crl()) < first + 3 and time.monotonic() < deadline:  # type: ignore[arg-type]
            time.sleep(0.05)
    assert _crl_number(ca.current_crl()) >= first + 3  # type: ignore[arg-type]
