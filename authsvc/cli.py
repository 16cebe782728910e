"""The ``authsvc`` command (INTERFACE §2).

Every command exits 0 on success. On failure it exits non-zero and its last line on stderr is
``error: …`` — never a traceback (set ``AUTHSVC_LOG_LEVEL=DEBUG`` to see one). With ``--json`` a
command prints exactly one JSON object on stdout (on failure: ``{"error", "error_description"}``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import logs
from .app import Services
from .cardagent.cli import card_agent
from .config import load_settings
from .db import DatabaseMissing
from .errors import AuthsvcError

log = logging.getLogger("authsvc.cli")

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(AuthsvcError):
    code = "command_failed"
    #: the command already printed its one JSON object (e.g. a failed verification's report)
    json_emitted = False


def _services(ctx: click.Context, *, create_database: bool = False) -> Services:
    """Build the instance's services once per command, from the environment."""
    obj = ctx.ensure_object(dict)
    if "services" not in obj:
        settings = load_settings()
        try:
            obj["services"] = Services.from_settings(settings, create_database=create_database)
        except DatabaseMissing as exc:
            raise CommandError(
                f"{exc}: run `authsvc db upgrade` first, or point AUTHSVC_DATABASE_URL "
                "(or AUTHSVC_INSTANCE_DIR) at the instance's database"
            ) from None
        ctx.call_on_close(obj["services"].close)
    return obj["services"]  # type: ignore[no-any-return]


def emit(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str))
    sys.stdout.flush()


def printable(name: str) -> str:
    """A file name as text, whatever bytes it is made of."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def needs_schema(func: F) -> F:
    """Turn a missing or outdated schema into an actionable message."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (DBAPIError, SQLAlchemyError) as exc:
            ctx = click.get_current_context()
            raise _database_error(ctx, exc) from exc

    return wrapper  # type: ignore[return-value]


def _database_error(ctx: click.Context, exc: Exception) -> CommandError:
    from . import migrate

    services = ctx.ensure_object(dict).get("services")
    if services is not None:
        try:
            current = migrate.current_revision(services.db.engine)
        except SQLAlchemyError:
            return CommandError(f"cannot reach the database: {_short(exc)}")
        if current != migrate.head_revision():
            return CommandError("the database schema is not up to date: run `authsvc db upgrade`")
    return CommandError(f"database error: {_short(exc)}")


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, no_args_is_help=True)
@click.version_option(package_name="authsvc")
def cli() -> None:
    """authsvc: the identity provider of the eHealth platform."""
    logs.configure()


# --- db ------------------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Create or migrate the schema (Alembic) to REVISION (default: head)."""
    from alembic.util.exc import CommandError as AlembicError

    from . import migrate

    services = _services(ctx, create_database=True)
    try:
        before = migrate.current_revision(services.db.engine)
        migrate.upgrade(services.db.engine, revision)
        after = migrate.current_revision(services.db.engine)
    except AlembicError as exc:
        raise CommandError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise CommandError(f"cannot migrate the database: {_short(exc)}") from None
    if before == after:
        click.echo(f"database schema already at {after}", err=True)
    else:
        click.echo(f"database schema upgraded from {before or 'nothing'} to {after}", err=True)


# --- directory -----------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def directory() -> None:
    """The national directory of health professionals."""


@directory.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--full", is_flag=True, help="The file is the whole directory: absent = left.")
@click.option(
    "--force",
    is_flag=True,
    help="With --full: mark the absent as left even with rejected rows or a mass departure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def directory_import(
    ctx: click.Context, file: Path, full: bool, force: bool, as_json: bool
) -> None:
    """Upsert professionals from a CSV FILE.

    The header is matricule,given_name,family_name,profession,provider_code.
    """
    from .audit.service import cli_actor
    from .directory.importer import import_directory

    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {printable(str(file))}: {exc.strerror or exc}") from None
    services = _services(ctx)
    actor = cli_actor()

    def end_sessions(session: Any, account: Any) -> None:
        # a departure has the same effects as a helpdesk revocation on sessions and tokens
        services.sessions.end_all(session, account.id, "left the directory", actor=actor)

    with services.db.transaction() as session:
        result = import_directory(
            session,
            data,
            full=full,
            on_suspend=[end_sessions],
            force=force,
            actor=actor,
            source=printable(file.name) if str(file) != "-" else "stdin",
            clock=services.clock,
        )
    if result.departures_skipped:
        click.echo(f"warning: no one marked as left: {result.departures_skipped}", err=True)
    if as_json:
        emit(result.to_dict())
        return
    click.echo(
        f"imported {result.imported}, updated {result.updated}, unchanged {result.unchanged}, "
        f"left {result.left}, rejected {len(result.rejected)}"
    )
    for rejected in result.rejected:
        click.echo(f"  line {rejected.line}: {rejected.error}")


# --- letters -------------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def letters() -> None:
    """Activation letters."""


@letters.command("issue")
@click.argument("matricule")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def letters_issue(ctx: click.Context, matricule: str, as_json: bool) -> None:
    """Issue an activation letter for MATRICULE; an earlier unused letter stops working."""
    from .activation import letters as letter_service
    from .audit.service import cli_actor

    services = _services(ctx)
    with services.db.transaction() as session:
        issued = letter_service.issue(
            session, matricule, hasher=services.hasher, actor=cli_actor(), clock=services.clock
        )
        # The code is printed before the commit: if it cannot be written (a full disk, a closed
        # pipe), the letter is not issued and the earlier letter keeps working.
        try:
            if as_json:
                emit(issued.to_dict())
            else:
                click.echo(f"Activation letter for {issued.name} (matricule {issued.matricule})")
                click.echo(f"  letter:          {issued.letter_id}")
                click.echo(f"  activation code: {issued.activation_code}")
                click.echo(f"  expires:         {issued.expires_at:%Y-%m-%d %H:%M} UTC")
                sys.stdout.flush()
        except OSError as exc:
            raise CommandError(
                f"cannot write the letter's code ({exc.strerror or exc}): no letter was issued"
            ) from None


# --- clients ------------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def clients() -> None:
    """Relying services."""


@clients.command("create")
@click.option("--name", required=True, help="The service's name, shown to people.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="A redirect URI (exact).")
@click.option("--public", is_flag=True, help="A public client (no secret; PKCE protects it).")
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True)
@click.option("--backchannel-logout-uri")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A scope beyond openid profile email professional (matricule, helpdesk).",
)
@click.option("--require-acr", type=click.Choice(["low", "high"]))
@click.option("--subject-type", type=click.Choice(["public", "pairwise"]), default="public")
@click.option("--grant", "grants", multiple=True, type=click.Choice(["client_credentials"]))
@click.option(
    "--auth-method",
    type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]),
    help="How it authenticates at the token endpoint (default: client_secret_basic).",
)
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its public JWK Set (private_key_jwt).",
)
@click.option("--id-token-alg", type=click.Choice(["ES256", "RS256"]), default="ES256")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def clients_create(
    ctx: click.Context,
    name: str,
    redirect_uris: tuple[str, ...],
    public: bool,
    post_logout: tuple[str, ...],
    backchannel_logout_uri: str | None,
    scopes: tuple[str, ...],
    require_acr: str | None,
    subject_type: str,
    grants: tuple[str, ...],
    auth_method: str | None,
    jwks_file: Path | None,
    id_token_alg: str,
    as_json: bool,
) -> None:
    """Register a relying service; its secret is printed once."""
    from .audit.service import cli_actor
    from .oidc.clients import register

    jwks = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"cannot read the JWK Set {printable(str(jwks_file))}: {exc}"
            ) from None
    services = _services(ctx)
    with services.db.transaction() as session:
        registration = register(
            session,
            name=name,
            redirect_uris=redirect_uris,
            public=public,
            post_logout_redirect_uris=post_logout,
            backchannel_logout_uri=backchannel_logout_uri,
            scopes=scopes,
            require_acr=require_acr,
            subject_type=subject_type,
            grants=grants,
            auth_method=auth_method,
            jwks=jwks,
            id_token_alg=id_token_alg,
            hasher=services.hasher,
            actor=cli_actor(),
            clock=services.clock,
        )
        try:  # printed before the commit: a secret that cannot be shown is not kept
            if as_json:
                emit(registration.to_dict())
            else:
                click.echo(f"client_id:     {registration.client_id}")
                if registration.client_secret:
                    click.echo(f"client_secret: {registration.client_secret}   (shown once)")
                sys.stdout.flush()
        except OSError as exc:
            raise CommandError(f"cannot write the client's secret: {exc.strerror or exc}") from None


# --- keys ---------------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def keys() -> None:
    """The provider's signing keys."""


@keys.command("rotate")
@click.pass_context
@needs_schema
def keys_rotate(ctx: click.Context) -> None:
    """Make new signing keys current; old keys stay published until their tokens expire."""
    from .audit.service import cli_actor

    services = _services(ctx)
    kids = services.keys.rotate(actor=cli_actor())
    click.echo(f"new signing keys: {', '.join(kids)}", err=True)


# --- staff and helpdesk ---------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def staff() -> None:
    """Staff roles."""


@staff.command("grant")
@click.argument("matricule")
@click.argument("role", type=click.Choice(["helpdesk", "admin"]))
@click.pass_context
@needs_schema
def staff_grant(ctx: click.Context, matricule: str, role: str) -> None:
    """Give the account of MATRICULE a staff ROLE (helpdesk or admin)."""
    from .audit.service import cli_actor

    services = _services(ctx)
    with services.db.transaction() as session:
        services.helpdesk.grant(session, matricule, role, actor=cli_actor())
    click.echo(f"{matricule} has the role {role}", err=True)


@cli.group(no_args_is_help=True)
def helpdesk() -> None:
    """The helpdesk's actions."""


@helpdesk.command("revoke-card")
@click.argument("matricule")
@click.option("--reason", required=True, type=click.Choice(["lost", "stolen", "damaged", "other"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def helpdesk_revoke_card(ctx: click.Context, matricule: str, reason: str, as_json: bool) -> None:
    """Revoke every active card of MATRICULE's account, at once, everywhere."""
    from .audit.service import cli_actor

    services = _services(ctx)
    with services.db.transaction() as session:
        result = services.helpdesk.revoke_cards(
            session, matricule, reason=reason, actor=cli_actor()
        )
    services.outbox_worker.run_once()  # tell the relying services now if they answer
    if as_json:
        emit(result.to_dict())
        return
    if not result.revoked:
        click.echo("no active card: nothing revoked")
    for card in result.revoked:
        click.echo(f"revoked card {card['serial']} ({card['issuer']})")
    click.echo(f"sessions ended: {result.sessions_ended}, tokens revoked: {result.tokens_revoked}")


# --- audit ---------------------------------------------------------------------------------------


@cli.group(no_args_is_help=True)
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def audit_verify(ctx: click.Context, as_json: bool) -> None:
    """Check the audit trail's hash chain; name every event that was edited, removed or moved."""
    from .audit.service import verify

    services = _services(ctx)
    with services.db.read_transaction() as session:
        result = verify(session)
    if as_json:
        emit(result.to_dict())
    else:
        for problem in result.problems:
            click.echo(f"TAMPERED {problem}", err=True)
        if result.ok:
            click.echo(f"audit trail ok: {result.events} events, head {result.head or '-'}")
    if not result.ok:
        first = result.problems[0]
        error = CommandError(
            f"the audit trail fails verification ({len(result.problems)} problem(s)); "
            f"first: {first}"
        )
        error.json_emitted = as_json
        raise error


# --- purge -------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@needs_schema
def purge(ctx: click.Context, as_json: bool) -> None:
    """Delete expired flows, challenges, codes and tokens, and old delivered mail.

    What serving processes also do about once an hour (docs/operations.md, "Housekeeping")."""
    from .maintenance import purge as purge_all

    counts = purge_all(_services(ctx))
    if as_json:
        emit({"purged": counts})
    else:
        for table, count in counts.items():
            click.echo(f"{table}: {count} purged")


# --- demo --------------------------------------------------------------------------------------


@cli.command(hidden=True)
@click.pass_context
@needs_schema
def demo(ctx: click.Context) -> None:
    """Set up the demo of `make run` (development only)."""
    from . import demo as demo_setup

    services = _services(ctx)
    state = demo_setup.init(services)
    issuer = services.settings.issuer
    click.echo("")
    click.echo("  authsvc demo")
    click.echo("  ------------")
    click.echo(f"  professional:    {state.name}")
    click.echo(f"  matricule:       {state.matricule}")
    if state.letter is not None:
        click.echo(f"  activation code: {state.letter.activation_code}  (new letter)")
    else:
        click.echo(f"  account:         {state.account_status} (no new letter needed)")
    click.echo(f"  provider:        {issuer}   health: {issuer}/healthz")
    click.echo("")


# --- serve ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads/--no-threads", default=True, help="Serve requests in threads.")
def serve(host: str, port: int, threads: bool) -> None:
    """Run the provider with the development server (production: gunicorn 'authsvc.wsgi:app')."""
    from werkzeug.serving import run_simple

    from . import create_app, migrate

    try:
        app = create_app()  # settings first: an invalid one is the first thing to say
    except DatabaseMissing as exc:
        raise CommandError(f"{exc}: run `authsvc db upgrade` first") from None
    _check_port(host, port)
    services: Services = app.extensions["authsvc"]
    try:
        current = migrate.current_revision(services.db.engine)
    except SQLAlchemyError as exc:
        raise CommandError(f"cannot reach the database: {_short(exc)}") from None
    if current != migrate.head_revision():
        raise CommandError("the database schema is not up to date: run `authsvc db upgrade`")
    log.info("authsvc serving %s on http://%s:%d", services.settings.issuer, host, port)
    run_simple(host, port, app, threaded=threads, use_reloader=False)


def _check_port(host: str, port: int) -> None:
    """Fail with one ``error:`` line now, rather than let the server print its own and exit."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


cli.add_command(card_agent)


# --- entry point ---------------------------------------------------------------------------------


def _fail(message: str, *, code: str, as_json: bool, status: int = 1) -> int:
    if as_json:
        with contextlib.suppress(OSError):  # stdout may be what failed
            emit({"error": code, "error_description": message})
    with contextlib.suppress(OSError):
        click.echo(f"error: {message}", err=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and turn every failure into one ``error:`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    try:
        result = cli.main(args=args, prog_name="authsvc", standalone_mode=False)
    except click.exceptions.Abort:
        return _fail("aborted", code="aborted", as_json=as_json, status=130)
    except click.ClickException as exc:
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            if exc.__class__.__name__ == "NoArgsIsHelpError":
                click.echo(exc.ctx.get_help(), err=True)
                return _fail(
                    "a command is needed (see above)", code="usage", as_json=as_json, status=2
                )
            click.echo(exc.ctx.get_usage(), err=True)
        return _fail(exc.format_message(), code="usage", as_json=as_json, status=exc.exit_code)
    except AuthsvcError as exc:
        emitted = getattr(exc, "json_emitted", False)
        return _fail(exc.description, code=exc.code, as_json=as_json and not emitted, status=1)
    except KeyboardInterrupt:
        return _fail("interrupted", code="interrupted", as_json=as_json, status=130)
    except Exception as exc:
        if os.environ.get("AUTHSVC_LOG_LEVEL", "").upper() == "DEBUG":
            log.exception("unexpected error")
        return _fail(
            f"unexpected {exc.__class__.__name__}: {exc} (set AUTHSVC_LOG_LEVEL=DEBUG for details)",
            code="internal_error",
            as_json=as_json,
        )
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
