"""The password policy and Argon2id hashing (SECURITY "Secrets at rest")."""

from __future__ import annotations

import pytest

from authsvc.security.passwords import (
    CHEAP,
    OWASP,
    PasswordHasher,
    WeakPassword,
    check_policy,
)

M = "1980041201789"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "too_short"),
        ("elevenchars", "too_short"),
        ("x" * 1025, "too_long"),
        ("password1234", "too_guessable"),
        ("aaaaaaaaaaaaaaaa", "too_guessable"),
        ("1234567890123", "too_guessable"),
        (f"my {M} number", "contains_matricule"),
        ("Marie loves sunshine 42", "contains_name"),
        ("DUPONT-rules-the-world", "contains_name"),
        ("dupont rules the world", "contains_name"),
        ("Dûpónt with accents!", "contains_name"),
    ],
)
def test_weak(password: str, reason: str) -> None:
    with pytest.raises(WeakPassword) as info:
        check_policy(password, matricule=M, names=["Marie", "Dupont"])
    assert info.value.reason == reason
    assert str(info.value)


@pytest.mark.parametrize(
    "password",
    ["zebra lantern quietly orbit", "Tr0ub4dor&3-horse-staple", "Kx9#vL2!pQ7$wR4m"],
)
def test_strong(password: str) -> None:
    check_policy(password, matricule=M, names=["Marie", "Dupont"])


def test_short_names_do_not_forbid_everything() -> None:
    check_policy("zebra lantern quietly orbit", matricule=M, names=["Li", "Bo"])


def test_argon2id_at_owasp_parameters() -> None:
    assert (OWASP.memory_cost, OWASP.time_cost, OWASP.parallelism) == (19 * 1024, 2, 1)
    hasher = PasswordHasher(OWASP)
    stored = hasher.hash("zebra lantern quietly orbit")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(stored, "zebra lantern quietly orbit")
    assert not hasher.verify(stored, "zebra lantern quietly orbiT")


def test_no_stored_hash_is_refused_after_the_same_work() -> None:
    hasher = PasswordHasher(CHEAP)
    assert not hasher.verify(None, "anything")
    assert not hasher.verify("not a hash", "anything")


def test_rehash_when_the_parameters_are_raised() -> None:
    old = PasswordHasher(CHEAP).hash("zebra lantern quietly orbit")
    assert PasswordHasher(OWASP).needs_rehash(old)
    assert not PasswordHasher(CHEAP).needs_rehash(old)
