"""Configuration: read once from the environment, checked before anything starts.

INTERFACE §1 is the contract: the variables, their meaning and their defaults. Every variable is
parsed by a small function that either returns a typed value or raises :class:`ConfigError` with a
message that names the variable, so that an invalid setting stops the start with one line an
operator can act on.

A ``.env``-style file is optional: when ``AUTHSVC_ENV_FILE`` names one (or ``./.env`` exists), its
``AUTHSVC_*`` lines fill in what the environment does not set. The environment always wins.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError

PREFIX = "AUTHSVC_"

REVOCATION_MODES = ("crl", "ocsp", "crl+ocsp", "none")
SMTP_TLS_MODES = ("starttls", "tls", "opportunistic")

#: Where Debian, Ubuntu, Fedora and Homebrew put SoftHSM2's PKCS#11 module, in that order.
SOFTHSM2_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

MIN_SECRET_KEY_LENGTH = 32
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name


@dataclass(frozen=True)
class Settings:
    """Every setting of an authsvc instance, typed and checked."""

    instance_dir: Path
    database_url: str
    issuer: str
    secret_key: bytes = field(repr=False)
    smtp_host: str | None
    smtp_port: int
    mail_from: str
    card_trust_anchors: Path
    card_revocation: str
    crl_max_age: int
    ratelimit_storage: str
    session_max_age: int
    full_level_max_age: int
    pkcs11_module: str
    #: AUTHSVC_SMTP_TLS: starttls (required), tls (implicit, SMTPS) or opportunistic
    smtp_tls: str = "opportunistic"
    smtp_username: str | None = None
    smtp_password: str = field(default="", repr=False)
    #: AUTHSVC_TRUSTED_PROXIES: reverse-proxy hops whose X-Forwarded-* headers are believed
    trusted_proxies: int = 0
    #: where the pages look for the card agent (docs/card-agent.md); not in INTERFACE §1: ours
    card_agent_url: str = "http://127.0.0.1:5480"
    #: earlier secrets, still accepted to verify what they protected (key rotation)
    secret_key_fallbacks: tuple[bytes, ...] = field(default=(), repr=False)
    log_level: str = "INFO"
    #: when set, new signing keys are made and kept on this PKCS#11 token (AUTHSVC_PKCS11_MODULE)
    signing_key_token: str | None = None
    signing_key_pin: str = field(default="", repr=False)
    #: prefix of every key in the limits' storage: one per deployment sharing a Redis
    ratelimit_prefix: str = "authsvc"
    #: connections each process keeps open to PostgreSQL, and how many more it may open at a peak
    db_pool_size: int = 5
    db_max_overflow: int = 10
    #: serve /metrics (Prometheus) to requests that do not come through a proxy (docs/operations.md)
    metrics: bool = False
    #: ``text`` (one line per record) or ``json`` (one JSON object per line)
    log_format: str = "text"

    @property
    def issuer_origin(self) -> str:
        """``scheme://host[:port]`` of the issuer: the origin smartcard challenges are bound to."""
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def mail_dir(self) -> Path:
        return self.instance_dir / "mail"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


T = TypeVar("T")


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _parse(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{PREFIX}{name}: {exc}") from None


def _positive_int(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"expected a whole number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _positive_count(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _port(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"expected a TCP port number, got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"expected a TCP port between 1 and 65535, got {value}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_issuer(raw: str) -> str:
    """OpenID Connect Discovery §3: https, no query, no fragment (http only on loopback).

    The scheme and host are lower-cased (they are case-insensitive, and ``is_https`` must not be
    fooled by ``HTTPS://``); credentials in the URL are refused, and never echoed.
    """
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL such as https://id.example.lu")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the issuer must not carry a user name or password")
    if parts.query or parts.fragment or "#" in raw or "?" in raw:
        raise ValueError("the issuer must not have a query or a fragment")
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("the issuer must use https (http is allowed only on loopback)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port in the issuer URL") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path}".rstrip("/")


def _database_url(raw: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        # not echoed: a mistyped URL may well carry a password
        raise ValueError(
            "not a SQLAlchemy database URL (expected e.g. postgresql+psycopg://user@host/db)"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"authsvc runs on sqlite or postgresql, not {url.get_backend_name()!r}")
    if url.drivername == "postgresql":
        # no driver named: authsvc ships psycopg (3)
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        raise ValueError("use the psycopg (3) driver: postgresql+psycopg://…")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
    return raw


def _agent_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"expected the agent's origin, e.g. http://127.0.0.1:5480, got {raw!r}")
    return raw.rstrip("/")


def _revocation(raw: str) -> str:
    value = raw.lower()
    if value not in REVOCATION_MODES:
        raise ValueError(f"expected one of {', '.join(REVOCATION_MODES)}, got {raw!r}")
    return value


def _proxy_hops(raw: str) -> int:
    value = _non_negative_int(raw)
    if value > 10:
        raise ValueError(f"expected the number of proxies in front of authsvc (0-10), got {value}")
    return value


def _smtp_tls(raw: str) -> str:
    value = raw.lower()
    if value not in SMTP_TLS_MODES:
        raise ValueError(f"expected one of {', '.join(SMTP_TLS_MODES)}, got {raw!r}")
    return value


def _ratelimit_storage(raw: str) -> str:
    parts = urlsplit(raw)
    if raw == "memory://":
        return raw
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("expected memory:// or redis://host:port[/db]")
    return raw


def _ratelimit_prefix(raw: str) -> str:
    if len(raw) > 64 or not all(ch.isascii() and (ch.isalnum() or ch in "-_.:") for ch in raw):
        raise ValueError(f"expected at most 64 letters, digits or - _ . :, got {raw!r}")
    return raw


def _mail_from(raw: str) -> str:
    from email.headerregistry import Address
    from email.utils import getaddresses, parseaddr

    if any(ord(ch) < 32 for ch in raw):
        raise ValueError("control characters (line breaks) are not allowed")
    if len(getaddresses([raw])) != 1:
        raise ValueError("expected one address")
    _, addr = parseaddr(raw)
    if not addr or "@" not in addr:
        raise ValueError(f"expected an email address, got {raw!r}")
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError):
        raise ValueError(f"expected an email address, got {raw!r}") from None
    return raw


def _hostname(raw: str) -> str:
    host = raw.strip().lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if (
        not host
        or len(host) > 253
        or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        )
    ):
        raise ValueError(f"expected a host name or an IP address, got {raw!r}")
    return host


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def _on_off(raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off"):
        raise ValueError(f"expected on or off, got {raw!r}")
    return value == "on"


def _log_format(raw: str) -> str:
    value = raw.lower()
    if value not in ("text", "json"):
        raise ValueError(f"expected text or json, got {raw!r}")
    return value


def _secret_key(raw: str) -> bytes:
    if len(raw) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_KEY_LENGTH} characters of random text "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    return raw.encode("utf-8")


def default_pkcs11_module() -> str:
    for candidate in SOFTHSM2_MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    return SOFTHSM2_MODULE_CANDIDATES[0]


def ensure_instance_dir(instance_dir: Path) -> None:
    """The instance folder holds secrets and personal data: only its owner may enter it."""
    instance_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_or_create_secret_key(instance_dir: Path) -> bytes:
    """The instance's own secret: generated once, kept in ``<instance>/secret_key`` (mode 0600).

    Several processes may start at once (gunicorn workers): the file is written under a temporary
    name and linked into place, so that every process reads the same complete key.
    """
    path = instance_dir / SECRET_KEY_FILE
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        ensure_instance_dir(instance_dir)
        tmp = instance_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_urlsafe(48).encode("ascii") + b"\n")
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        key = path.read_bytes().strip()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"{path}: the stored secret key is too short; delete it to regenerate")
    return key


def read_env_file(path: Path) -> dict[str, str]:
    """The ``AUTHSVC_*`` assignments of a ``.env``-style file, read by python-dotenv."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{PREFIX}ENV_FILE: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{PREFIX}ENV_FILE: cannot read {path}: {exc}") from None
    from dotenv import dotenv_values

    for key, value in dotenv_values(stream=io.StringIO(text)).items():
        if key.startswith(PREFIX) and value is not None:
            values[key] = value
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise :class:`ConfigError` naming the first bad variable."""
    env: dict[str, str] = dict(os.environ if environ is None else environ)
    env_file = env.get(PREFIX + "ENV_FILE")
    if env_file:
        env = {**read_env_file(Path(env_file)), **env}
    elif environ is None and Path(".env").is_file():
        env = {**read_env_file(Path(".env")), **env}

    instance_dir = Path(_get(env, "INSTANCE_DIR") or "./instance").expanduser().resolve()
    if instance_dir.exists() and not instance_dir.is_dir():
        raise ConfigError(f"{PREFIX}INSTANCE_DIR: {instance_dir} exists and is not a folder")

    default_db = f"sqlite:///{instance_dir / 'authsvc.sqlite3'}"
    database_url = _parse(env, "DATABASE_URL", _database_url, default_db)
    issuer = _parse(env, "ISSUER", parse_issuer, "http://127.0.0.1:5000")
    smtp_host = _parse(env, "SMTP_HOST", _hostname, None)
    smtp_tls = _parse(env, "SMTP_TLS", _smtp_tls, "opportunistic")
    smtp_port = _parse(env, "SMTP_PORT", _port, 465 if smtp_tls == "tls" else 25)
    if _get(env, "SMTP_PORT") and not smtp_host:
        raise ConfigError(f"{PREFIX}SMTP_PORT: set, but {PREFIX}SMTP_HOST is not")
    smtp_username = _get(env, "SMTP_USERNAME")
    smtp_password = env.get(PREFIX + "SMTP_PASSWORD") or ""  # not stripped: it is a secret
    for name, value in (("SMTP_TLS", _get(env, "SMTP_TLS")), ("SMTP_USERNAME", smtp_username)):
        if value and not smtp_host:
            raise ConfigError(f"{PREFIX}{name}: set, but {PREFIX}SMTP_HOST is not")
    if smtp_username and not smtp_password:
        raise ConfigError(f"{PREFIX}SMTP_USERNAME: set, but {PREFIX}SMTP_PASSWORD is not")
    if smtp_password and not smtp_username:
        raise ConfigError(f"{PREFIX}SMTP_PASSWORD: set, but {PREFIX}SMTP_USERNAME is not")
    mail_from = _parse(env, "MAIL_FROM", _mail_from, "no-reply@localhost")
    anchors = _parse(
        env,
        "CARD_TRUST_ANCHORS",
        lambda raw: Path(raw).expanduser().resolve(),
        instance_dir / "demo-ca" / "trust-anchors.pem",
    )
    revocation = _parse(env, "CARD_REVOCATION", _revocation, "crl")
    crl_max_age = _parse(env, "CRL_MAX_AGE", _non_negative_int, 300)
    ratelimit_storage = _parse(env, "RATELIMIT_STORAGE", _ratelimit_storage, "memory://")
    trusted_proxies = _parse(env, "TRUSTED_PROXIES", _proxy_hops, 0)
    ratelimit_prefix = _parse(env, "RATELIMIT_PREFIX", _ratelimit_prefix, "authsvc")
    db_pool_size = _parse(env, "DB_POOL_SIZE", _positive_count, 5)
    db_max_overflow = _parse(env, "DB_MAX_OVERFLOW", _non_negative_int, 10)
    session_max_age = _parse(env, "SESSION_MAX_AGE", _positive_int, 43200)
    full_level_max_age = _parse(env, "FULL_LEVEL_MAX_AGE", _positive_int, 28800)
    pkcs11_module = _get(env, "PKCS11_MODULE") or default_pkcs11_module()
    card_agent_url = _parse(env, "CARD_AGENT_URL", _agent_url, "http://127.0.0.1:5480")
    log_level = _parse(env, "LOG_LEVEL", _log_level, "INFO")
    log_format = _parse(env, "LOG_FORMAT", _log_format, "text")
    metrics = _parse(env, "METRICS", _on_off, False)
    signing_key_token = _get(env, "SIGNING_KEY_TOKEN")
    signing_key_pin = _get(env, "SIGNING_KEY_PIN") or ""
    pin_file = _get(env, "SIGNING_KEY_PIN_FILE")
    if pin_file:
        try:
            signing_key_pin = Path(pin_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}SIGNING_KEY_PIN_FILE: cannot read {pin_file}: {exc.strerror or exc}"
            ) from None
    if signing_key_token and not signing_key_pin:
        raise ConfigError(
            f"{PREFIX}SIGNING_KEY_TOKEN: set, but neither {PREFIX}SIGNING_KEY_PIN nor "
            f"{PREFIX}SIGNING_KEY_PIN_FILE gives the token's PIN"
        )
    no_fallbacks: tuple[bytes, ...] = ()
    fallbacks = _parse(
        env,
        "SECRET_KEY_FALLBACKS",
        lambda raw: tuple(_secret_key(k.strip()) for k in raw.split(",") if k.strip()),
        no_fallbacks,
    )

    raw_secret = _get(env, "SECRET_KEY")
    if raw_secret is not None:
        secret_key = _parse(env, "SECRET_KEY", _secret_key, b"")
    else:
        try:
            secret_key = load_or_create_secret_key(instance_dir)
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}INSTANCE_DIR: cannot keep the generated secret key in {instance_dir}: "
                f"{exc.strerror or exc}"
            ) from None

    return Settings(
        instance_dir=instance_dir,
        database_url=database_url,
        issuer=issuer,
        secret_key=secret_key,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        mail_from=mail_from,
        card_trust_anchors=anchors,
        card_revocation=revocation,
        crl_max_age=crl_max_age,
        ratelimit_storage=ratelimit_storage,
        session_max_age=session_max_age,
        full_level_max_age=full_level_max_age,
        pkcs11_module=pkcs11_module,
        smtp_tls=smtp_tls,
        smtp_username=smtp_username,
        smtp_password=smtp_password,
        trusted_proxies=trusted_proxies,
        card_agent_url=card_agent_url,
        secret_key_fallbacks=fallbacks,
        log_level=log_level,
        signing_key_token=signing_key_token,
        signing_key_pin=signing_key_pin,
        ratelimit_prefix=ratelimit_prefix,
        db_pool_size=db_pool_size,
        db_max_overflow=db_max_overflow,
        metrics=metrics,
        log_format=log_format,
    )
