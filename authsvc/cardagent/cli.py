"""``authsvc card-agent``: run the local card agent on 127.0.0.1 (INTERFACE §2 and §6).

Registered on the ``authsvc`` command by :mod:`authsvc.cli`. Failures (a bad setting, the port in
use, the PKCS#11 module missing) end with one ``error: …`` line on stderr, as every command does.
"""

from __future__ import annotations

import logging
import socket

import click

from ..errors import AuthsvcError
from .config import DEFAULT_PORT, TRUSTED_ORIGINS_VARIABLE, load_agent_settings

log = logging.getLogger("authsvc.cardagent")

LISTEN_HOST = "127.0.0.1"


class CardAgentError(AuthsvcError):
    code = "card_agent_failed"


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 only (never a public interface)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LISTEN_HOST, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise CardAgentError(
            f"cannot listen on {LISTEN_HOST}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


@click.command("card-agent")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port on 127.0.0.1.",
)
@click.option(
    "--trust-origin",
    "trust_origins",
    multiple=True,
    metavar="ORIGIN",
    help=(
        "An origin (scheme://host[:port]) whose pages may ask for the card; repeatable. Also "
        f"{TRUSTED_ORIGINS_VARIABLE} (comma-separated). Default: the origin of AUTHSVC_ISSUER."
    ),
)
def card_agent(port: int, trust_origins: tuple[str, ...]) -> None:
    """Run the local card agent: the card reader's middleware for the sign-in pages."""
    from werkzeug.serving import make_server

    from .. import logs
    from .app import create_app
    from .card import CardReader, ModuleError

    logs.configure()
    settings = load_agent_settings(port=port, trust_origins=trust_origins)
    try:
        reader = CardReader(settings.pkcs11_module)
    except ModuleError as exc:
        raise CardAgentError(f"AUTHSVC_PKCS11_MODULE: {exc.description}") from None
    sock = listen(port)
    try:
        server = make_server(
            LISTEN_HOST, port, create_app(settings, reader), threaded=True, fd=sock.fileno()
        )
    finally:
        sock.close()  # the server holds its own duplicate of the socket
    log.info(
        "card agent on %s, signing for %s",
        settings.base_url,
        ", ".join(settings.trusted_origins),
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("card agent stopped")
    finally:
        server.server_close()
