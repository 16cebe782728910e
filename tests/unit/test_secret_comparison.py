"""authsvc.security.secrets.equal: the constant-time comparison of what a client sent."""

from __future__ import annotations

import pytest

from authsvc.security.secrets import equal


@pytest.mark.parametrize("given", ["é", "\ud800", "x" * 10_000, "", "csrf-token-\u00e9", "\x00"])
def test_anything_a_client_sends_is_compared_never_raises(given: str) -> None:
    # hmac.compare_digest raises TypeError for non-ASCII str: that was a 500 for csrf_token "é"
    assert equal(given, "csrf-token-abc") is False


def test_equal_values() -> None:
    assert equal("abc", "abc")
    assert equal("é", "é")
    assert not equal("abc", "abd")
