"""Delivering a composed mail: through SMTP, or into ``<instance>/mail/`` when none is configured.

Called by the outbox worker only, never in a user's request: a mail server that is down delays
the mail (the outbox retries), it never fails the request that caused it.

Transport security (``AUTHSVC_SMTP_TLS``), always with the server's certificate verified:

- ``starttls``: the server must offer STARTTLS; a server that does not is a failed delivery (the
  mail is not sent in clear);
- ``tls``: TLS from the first byte (SMTPS, port 465);
- ``opportunistic`` (the default): STARTTLS when the server offers it, in clear otherwise — but
  never the password: with ``AUTHSVC_SMTP_USERNAME``, a server without STARTTLS is a failure.

The password is never logged and never part of an error message.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import ssl
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from ..clock import Clock, system_clock
from ..outbox.service import PermanentFailure

log = logging.getLogger("authsvc.mail")

SMTP_TIMEOUT = 10
TLS_MODES = ("starttls", "tls", "opportunistic")


def build(message: Mapping[str, Any], *, sender: str, clock: Clock = system_clock) -> EmailMessage:
    """``{"to", "subject", "text", "html"?, "lang"?}`` → a MIME message (text, HTML alternative)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message["to"]
    mail["Subject"] = message["subject"]
    mail["Date"] = format_datetime(clock.now())
    domain = sender.rsplit("@", 1)[-1].strip(">") or "localhost"
    mail["Message-ID"] = make_msgid(domain=domain)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message["text"])
    if message.get("html"):
        mail.add_alternative(message["html"], subtype="html")
    if message.get("lang"):  # after the content: set_content() drops Content-* headers
        mail["Content-Language"] = message["lang"]
    return mail


class MailSender:
    """The outbox handler for ``mail`` messages."""

    def __init__(
        self,
        *,
        sender: str,
        smtp_host: str | None,
        smtp_port: int,
        mail_dir: Path,
        clock: Clock = system_clock,
        tls: str = "opportunistic",
        username: str | None = None,
        password: str = "",
        tls_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}")
        self.sender = sender
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.mail_dir = mail_dir
        self.clock = clock
        self.tls = tls
        self.username = username
        self._password = password
        self._tls_context = tls_context

    def __repr__(self) -> str:  # never the password
        return f"MailSender(smtp={self.smtp_host}:{self.smtp_port}, tls={self.tls})"

    def __call__(self, message: Mapping[str, Any]) -> None:
        mail = build(message, sender=self.sender, clock=self.clock)
        if self.smtp_host:
            self._smtp(mail)
        else:
            self._drop(mail)

    def _connect(self) -> smtplib.SMTP:
        host = self.smtp_host or ""
        if self.tls == "tls":
            return smtplib.SMTP_SSL(
                host, self.smtp_port, timeout=SMTP_TIMEOUT, context=self._tls_context()
            )
        return smtplib.SMTP(host, self.smtp_port, timeout=SMTP_TIMEOUT)

    def _smtp(self, mail: EmailMessage) -> None:
        where = f"mail server {self.smtp_host}:{self.smtp_port}"
        try:
            with self._connect() as smtp:
                smtp.ehlo()
                secure = self.tls == "tls"
                if not secure and smtp.has_extn("starttls"):
                    smtp.starttls(context=self._tls_context())
                    smtp.ehlo()
                    secure = True
                if not secure and self.tls == "starttls":
                    raise ConnectionError(
                        f"{where} does not offer STARTTLS, which AUTHSVC_SMTP_TLS=starttls "
                        "requires: the mail was not sent"
                    )
                if self.username:
                    if not secure:
                        raise ConnectionError(
                            f"{where} does not offer STARTTLS: the password is not sent in clear"
                        )
                    smtp.login(self.username, self._password)
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(
                self._scrub(f"the mail server refused the recipient: {exc}")
            ) from None
        except ConnectionError as exc:
            if str(exc).startswith(where):
                raise
            raise ConnectionError(
                self._scrub(f"{where}: {exc.__class__.__name__}: {exc}")
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionError(
                self._scrub(f"{where}: {exc.__class__.__name__}: {exc}")
            ) from None

    def _scrub(self, text: str) -> str:
        """An error message without the password, even if a server echoed it back."""
        if not self._password:
            return text
        import base64

        secrets_ = {self._password, base64.b64encode(self._password.encode()).decode()}
        if self.username:
            plain = f"\0{self.username}\0{self._password}".encode()
            secrets_.add(base64.b64encode(plain).decode())
        for secret in secrets_:
            text = text.replace(secret, "***")
        return text

    def _drop(self, mail: EmailMessage) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%S%f")
        path = self.mail_dir / f"{stamp}-{secrets.token_hex(4)}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(mail))
        tmp.replace(path)
        log.info("mail to %s (%s) written to %s", mail["To"], mail["Subject"], path)
