"""What an admin sets up before outreach: customers' email addresses (imported from a CSV, beside
those MoneyKit reports) and the email template."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from linkdesk.auth import Actor, Permission, as_actor, require
from linkdesk.errors import ServiceError
from linkdesk.mail import is_valid_address
from linkdesk.services.audit import AuditLog
from linkdesk.services.outreach_text import (
    DEFAULT_TEMPLATE,
    EmailTemplate,
    check_template,
)
from linkdesk.settings import Settings
from linkdesk.store.contacts import FROM_IMPORT, FROM_MONEYKIT, emails_of
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    CustomerEmail,
    OutreachTemplate,
)

__all__ = ["ImportProblem", "ImportReport", "OutreachSetup"]

MAX_IMPORT_BYTES = 5 * 1024 * 1024
TEMPLATE_NAME = "relink"


@dataclass(frozen=True, slots=True)
class ImportProblem:
    line: int
    message: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: int
    updated: int
    unchanged: int
    problems: list[ImportProblem]
    kept_from_moneykit: list[str]


class OutreachSetup:
    """Addresses and the template; :class:`~linkdesk.services.outreach.OutreachService` builds
    on it."""

    _store: Store
    _audit: AuditLog
    _settings: Settings
    _clock: Callable[[], datetime]

    # -- addresses -------------------------------------------------------------------------------

    def import_emails(self, data: str | bytes, actor: Actor | str) -> ImportReport:
        """Store ``customer id,email`` rows (a header row is optional). Valid rows are stored;
        every bad row is reported with its line number. MoneyKit's addresses are kept."""
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.SETTINGS)
        if isinstance(data, bytes):
            if len(data) > MAX_IMPORT_BYTES:
                raise ServiceError("The file is larger than 5 MB; split it.")
            try:
                data = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ServiceError("The file is not UTF-8 text (save it as CSV UTF-8).") from exc
        problems: list[ImportProblem] = []
        wanted: dict[str, tuple[str, int]] = {}
        reader = csv.reader(io.StringIO(data))
        for record in reader:
            line = reader.line_num
            cells = [cell.strip() for cell in record]
            if not any(cells):
                continue
            if line == 1 and [c.lower() for c in cells[:2]] in (
                ["customer_id", "email"],
                ["customer id", "email"],
                ["customer", "email"],
            ):
                continue
            if len(cells) != 2:
                problems.append(ImportProblem(line, f"expected 2 columns, found {len(cells)}"))
                continue
            customer_id, email = cells
            if not 1 <= len(customer_id) <= 150 or any(ord(ch) < 32 for ch in customer_id):
                problems.append(
                    ImportProblem(line, "the customer id must be 1–150 printable characters")
                )
                continue
            if not is_valid_address(email):
                problems.append(ImportProblem(line, f"{email[:80]!r} is not a valid email address"))
                continue
            if customer_id in wanted:
                first = wanted[customer_id][1]
                problems.append(
                    ImportProblem(line, f"customer {customer_id} is on line {first} already")
                )
                continue
            wanted[customer_id] = (email, line)
        added = updated = unchanged = 0
        kept: list[str] = []
        now = self._clock()
        with self._store.write() as session:
            existing = emails_of(session, wanted)
            for customer_id, (email, _line) in wanted.items():
                row = existing.get(customer_id)
                if row is None:
                    session.add(
                        CustomerEmail(
                            customer_id=customer_id,
                            email=email,
                            source=FROM_IMPORT,
                            updated_at=now,
                            updated_by=actor.name,
                        )
                    )
                    added += 1
                elif row.source == FROM_MONEYKIT:
                    if row.email != email:
                        kept.append(customer_id)
                    else:
                        unchanged += 1
                elif row.email == email:
                    unchanged += 1
                else:
                    row.email, row.updated_at, row.updated_by = email, now, actor.name
                    updated += 1
            self._audit.add(
                session,
                actor=actor,
                action="outreach.import_emails",
                outcome="imported" if not problems else "imported_with_problems",
                detail=(
                    f"{added} added, {updated} updated, {unchanged} unchanged, "
                    f"{len(kept)} kept from MoneyKit, {len(problems)} bad rows"
                ),
            )
        return ImportReport(added, updated, unchanged, problems, kept)

    def address_count(self) -> dict[str, int]:
        with self._store.read() as session:
            rows = session.execute(
                sa.select(CustomerEmail.source, sa.func.count()).group_by(CustomerEmail.source)
            ).all()
        return {source: int(count) for source, count in rows}

    # -- template --------------------------------------------------------------------------------

    def template(self) -> EmailTemplate:
        with self._store.read() as session:
            row = session.get(OutreachTemplate, TEMPLATE_NAME)
            if row is None:
                return DEFAULT_TEMPLATE
            return EmailTemplate(
                row.subject, row.text_body, row.html_body, row.updated_by, row.updated_at
            )

    def save_template(
        self, subject: str, text: str, html_body: str, actor: Actor | str
    ) -> EmailTemplate:
        """Validate (known placeholders, the link in both bodies) and store the template."""
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.SETTINGS)
        template = EmailTemplate(subject.strip(), text, html_body)
        check_template(template)
        now = self._clock()
        with self._store.write() as session:
            row = session.get(OutreachTemplate, TEMPLATE_NAME)
            if row is None:
                row = OutreachTemplate(name=TEMPLATE_NAME)
                session.add(row)
            row.subject, row.text_body, row.html_body = template.subject, text, html_body
            row.updated_at, row.updated_by = now, actor.name
            self._audit.add(session, actor=actor, action="outreach.template", outcome="saved")
        return EmailTemplate(template.subject, text, html_body, actor.name, now)

    def reset_template(self, actor: Actor | str) -> None:
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.SETTINGS)
        with self._store.write() as session:
            session.execute(
                sa.delete(OutreachTemplate).where(OutreachTemplate.name == TEMPLATE_NAME)
            )
            self._audit.add(session, actor=actor, action="outreach.template", outcome="reset")
