"""A real SMTP server in the test process (aiosmtpd) that keeps every message it receives.

Used by the unit, app and browser tests: Linkdesk sends through ``smtplib`` to this server on a
free loopback port, and the tests read what was delivered (recipient, subject, parts, links).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"
REPAIR_URL = re.compile(r"https?://[^\s\"'<>]+/repair\?token=[A-Za-z0-9_.=-]+")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Delivered:
    envelope_to: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())

    @property
    def text(self) -> str:
        return self.part("plain")

    @property
    def html(self) -> str:
        return self.part("html")

    def repair_links(self) -> list[str]:
        return REPAIR_URL.findall(self.text)


class Inbox:
    """The messages received, in order (thread-safe)."""

    def __init__(self) -> None:
        self._messages: list[Delivered] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._arrived:
            self._messages.append(Delivered(list(envelope.rcpt_tos), parsed))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[Delivered]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Delivered]:
        """Block until ``count`` messages have arrived (a condition, not a sleep)."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._messages) >= count, timeout=timeout)
            return list(self._messages)


@contextmanager
def smtp_inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    inbox.port = free_loopback_port()
    controller = Controller(inbox, hostname=LOOPBACK, port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
