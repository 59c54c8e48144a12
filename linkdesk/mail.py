"""Sending email through SMTP: one small core that any part of Linkdesk can use.

``SmtpSettings`` holds where and how to connect (built from :class:`Settings` or by hand), and
``send_mail`` delivers one message (plain text, optionally with an HTML alternative) over its own
connection. Failures come back as :class:`MailError` with a message fit for people; the password
is never part of a message, a log line or a ``repr``.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

from pydantic import SecretStr

from linkdesk.settings import Settings

__all__ = [
    "MailError",
    "OutgoingMail",
    "SmtpSettings",
    "TlsMode",
    "build_message",
    "is_valid_address",
    "send_mail",
]

TlsMode = Literal["none", "starttls", "tls"]

# Deliberately plain: one @, a dotted domain, nothing that could end a header or a list.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MAX_ADDRESS = 254


def is_valid_address(value: str) -> bool:
    """A bare address such as ``ana@example.com`` (no display name, no whitespace)."""
    return len(value) <= _MAX_ADDRESS and _ADDRESS.fullmatch(value) is not None


class MailError(Exception):
    """The message was not handed to the SMTP server (the reason is safe to show)."""


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    tls: TlsMode = "starttls"
    sender: str = "Linkdesk <linkdesk@example.com>"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings | None:
        """The configured server, or None when ``LINKDESK_SMTP_HOST`` is unset."""
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            sender=settings.smtp_sender,
            username=settings.smtp_username or None,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout_seconds,
        )


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    to: str
    subject: str
    text: str
    html: str | None = None


def _one_line(value: str) -> str:
    # A newline in a header value would start a new header.
    return " ".join(value.split())


def build_message(sender: str, mail: OutgoingMail) -> EmailMessage:
    """The MIME message: text/plain, plus text/html as an alternative when given."""
    if not is_valid_address(mail.to):
        raise MailError(f"not a valid email address: {mail.to!r}")
    name, address = parseaddr(sender)
    if not is_valid_address(address):
        raise MailError("LINKDESK_SMTP_SENDER is not a valid address")
    message = EmailMessage()
    message["From"] = Address(display_name=_one_line(name), addr_spec=address)
    message["To"] = mail.to
    message["Subject"] = _one_line(mail.subject)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=address.rsplit("@", 1)[1])
    message.set_content(mail.text)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if smtp.tls == "tls":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    connection = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    if smtp.tls == "starttls":
        connection.ehlo()
        if not connection.has_extn("starttls"):
            connection.close()
            raise MailError(
                f"{smtp.host}:{smtp.port} does not offer STARTTLS; set LINKDESK_SMTP_TLS "
                "to tls or none if that is intended"
            )
        connection.starttls(context=context)
        connection.ehlo()
    return connection


def send_mail(smtp: SmtpSettings, mail: OutgoingMail) -> str:
    """Hand one message to the SMTP server; returns its Message-ID. Raises :class:`MailError`."""
    message = build_message(smtp.sender, mail)
    try:
        connection = _connect(smtp)
        try:
            if smtp.username:
                password = smtp.password.get_secret_value() if smtp.password else ""
                connection.login(smtp.username, password)
            refused = connection.send_message(message)
        finally:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(
            f"the SMTP server refused the user name or password ({exc.smtp_code})"
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"the SMTP server refused the recipient {mail.to}") from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        raise MailError(
            f"the SMTP server answered {exc.smtp_code}: {_one_line(text)[:200]}"
        ) from exc
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        raise MailError(f"SMTP error: {type(exc).__name__}") from exc
    except OSError as exc:
        raise MailError(
            f"cannot reach the SMTP server {smtp.host}:{smtp.port} ({exc.strerror or exc})"
        ) from exc
    if refused:
        raise MailError(f"the SMTP server refused the recipient {mail.to}")
    return str(message["Message-ID"])
