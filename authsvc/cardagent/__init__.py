"""The card agent: the card reader's middleware on the professional's computer (INTERFACE §6).

``authsvc card-agent`` serves, on 127.0.0.1 only, a small JSON API that the provider's sign-in and
activation pages call with ``fetch()``, and its own PIN page. It reaches the card through PKCS#11,
asks for the PIN itself, and answers a challenge with a Web eID authentication token only for the
origins it trusts. The protocol is in ``docs/card-agent.md``.

- :mod:`.config` — settings (trusted origins, port, PKCS#11 module);
- :mod:`.card` — the cards through PKCS#11 and the Web eID token;
- :mod:`.store` — authentication requests in memory;
- :mod:`.app` — the Flask application (API, PIN page);
- :mod:`.cli` — the ``authsvc card-agent`` command.
"""
