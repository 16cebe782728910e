"""The card agent's settings: its port, the origins it signs for, the PKCS#11 module.

The agent runs on the professional's computer, not beside the provider: it never calls
:func:`authsvc.config.load_settings` (which keeps a generated secret key in an instance folder) and
needs no database, no secret and no instance folder. It reuses the provider's parsing helpers so
that the same values mean the same thing:

- ``AUTHSVC_CARD_AGENT_TRUSTED_ORIGINS`` (comma-separated) and ``--trust-origin`` (repeatable) are
  the origins it signs for (both together: their union); when neither is given, the origin of
  ``AUTHSVC_ISSUER`` (default ``http://127.0.0.1:5000``);
- ``AUTHSVC_PKCS11_MODULE``: the card reader's PKCS#11 module (default: SoftHSM2's).

An invalid value raises :class:`ConfigError` naming the option or the variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from ..config import PREFIX, default_pkcs11_module, parse_issuer, read_env_file
from ..errors import ConfigError

DEFAULT_PORT = 5480
DEFAULT_ISSUER = "http://127.0.0.1:5000"
TRUSTED_ORIGINS_VARIABLE = PREFIX + "CARD_AGENT_TRUSTED_ORIGINS"
#: How long an authentication request waits for its PIN (and its challenge is worth signing).
REQUEST_LIFETIME = timedelta(minutes=5)
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AgentSettings:
    """Everything the card agent needs, checked."""

    trusted_origins: tuple[str, ...]
    pkcs11_module: str
    port: int = DEFAULT_PORT
    request_lifetime: timedelta = REQUEST_LIFETIME

    @property
    def hosts(self) -> tuple[str, ...]:
        """The ``Host`` headers the agent answers (anything else is DNS rebinding)."""
        return (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    @property
    def own_origins(self) -> tuple[str, ...]:
        """The agent's own origins: its PIN page posts from there."""
        return tuple(f"http://{host}" for host in self.hosts)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def parse_origin(raw: str) -> str:
    """``scheme://host[:port]``, normalised as browsers send it in ``Origin``.

    https, or http on loopback only (as for the issuer); no path, query, fragment or user; the
    scheme and host in lower case; the scheme's default port left out.
    """
    text = raw.strip()
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.username is not None or parts.password is not None:
        raise ValueError(f"expected an origin (scheme://host[:port]), got {raw!r}")
    try:  # https (http only on loopback), a host, a valid port, no query or fragment
        parse_issuer(text)
    except ValueError as exc:
        raise ValueError(str(exc).replace("the issuer", "an origin")) from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def issuer_origin(issuer: str) -> str:
    """The origin (``scheme://host[:port]``) of an issuer URL."""
    return parse_origin(f"{urlsplit(issuer).scheme}://{urlsplit(issuer).netloc}")


def _environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The environment, with a ``.env``-style file filling the gaps (as the provider reads it)."""
    env: dict[str, str] = dict(os.environ if environ is None else environ)
    env_file = env.get(PREFIX + "ENV_FILE")
    if env_file:
        env = {**read_env_file(Path(env_file)), **env}
    elif environ is None and Path(".env").is_file():
        env = {**read_env_file(Path(".env")), **env}
    return env


def _origins(values: Iterable[str], source: str) -> list[str]:
    origins = []
    for value in values:
        if not value.strip():
            continue
        try:
            origins.append(parse_origin(value))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return origins


def load_agent_settings(
    environ: Mapping[str, str] | None = None,
    *,
    port: int = DEFAULT_PORT,
    trust_origins: Iterable[str] = (),
    request_lifetime: timedelta = REQUEST_LIFETIME,
) -> AgentSettings:
    """Read and check the agent's settings; raise :class:`ConfigError` naming what is wrong."""
    env = _environment(environ)
    origins = _origins(trust_origins, "--trust-origin")
    raw_env_origins = (env.get(TRUSTED_ORIGINS_VARIABLE) or "").strip()
    origins += _origins(raw_env_origins.split(","), TRUSTED_ORIGINS_VARIABLE)
    if not origins:
        raw_issuer = (env.get(PREFIX + "ISSUER") or "").strip() or DEFAULT_ISSUER
        try:
            origins = [issuer_origin(parse_issuer(raw_issuer))]
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}ISSUER: {exc}") from None

    module = (env.get(PREFIX + "PKCS11_MODULE") or "").strip()
    if module:
        if not Path(module).is_file():
            raise ConfigError(f"{PREFIX}PKCS11_MODULE: {module} does not exist")
    else:
        module = default_pkcs11_module()
        if not Path(module).is_file():
            raise ConfigError(
                f"{PREFIX}PKCS11_MODULE: not set, and SoftHSM2's module is not installed "
                "(Debian: apt-get install softhsm2); set it to the card reader's PKCS#11 module"
            )
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: expected a TCP port between 1 and 65535, got {port}")
    return AgentSettings(
        trusted_origins=tuple(dict.fromkeys(origins)),
        pkcs11_module=module,
        port=port,
        request_lifetime=request_lifetime,
    )
