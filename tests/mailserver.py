"""A real SMTP server for tests (aiosmtpd on 127.0.0.1), started and stopped by the test."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller


class Inbox:
    """What the SMTP server received, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def wait(self, count: int = 1, timeout: float = 10) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, (
            f"{len(self.messages)} mail(s) arrived, {count} expected"
        )
        return self.messages

    def code(self, message: EmailMessage | None = None) -> str:
        message = message or self.messages[-1]
        text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        match = re.search(r"^Verification code: (\d{6})\r?$", text, re.MULTILINE)
        assert match, text
        return match.group(1)


class SmtpServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 (``.stop()`` / ``.start()`` to take it down and back)."""
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()
