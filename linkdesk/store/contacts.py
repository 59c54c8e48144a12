"""Customers' email addresses for relink emails, and where each one came from."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.mail import is_valid_address
from linkdesk.store.models import CustomerEmail

__all__ = ["FROM_IMPORT", "FROM_MONEYKIT", "emails_of", "remember_moneykit_email"]

FROM_MONEYKIT = "moneykit"
FROM_IMPORT = "import"
_CHUNK = 500


def remember_moneykit_email(
    session: Session, customer_id: str, email: str | None, now: datetime
) -> bool:
    """Keep MoneyKit's ``customer_user.email`` for ``customer_id``; it wins over an import.

    An address that is not a plain valid address is ignored (returns False).
    """
    if not email or not is_valid_address(email):
        return False
    row = session.get(CustomerEmail, customer_id)
    if row is None:
        session.add(
            CustomerEmail(
                customer_id=customer_id,
                email=email,
                source=FROM_MONEYKIT,
                updated_at=now,
                updated_by="moneykit",
            )
        )
    elif row.email != email or row.source != FROM_MONEYKIT:
        row.email, row.source, row.updated_at, row.updated_by = (
            email,
            FROM_MONEYKIT,
            now,
            "moneykit",
        )
    return True


def emails_of(session: Session, customer_ids: Iterable[str]) -> dict[str, CustomerEmail]:
    """The stored address of each customer that has one."""
    wanted = sorted(set(customer_ids))
    found: dict[str, CustomerEmail] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in session.scalars(
            sa.select(CustomerEmail).where(CustomerEmail.customer_id.in_(chunk))
        ):
            found[row.customer_id] = row
    return found
