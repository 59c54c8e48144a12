"""The Links page's table: its rows and its columns, sized so that nothing a person reads is cut.

At 1440x900 with the sidebar open the grid is about 980 px wide. Every column has a fixed width
measured for its longest value in the dashboard's font (14 px Source Sans, 8 px padding each
side), so the health verdict, the error, the link id and the bank name stay whole and the grid
needs no horizontal scroll. The brand colour frames the logo instead of taking a column.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import streamlit as st

from linkdesk.read.link_rows import LinkRow
from ui.render import ERROR_LABELS, framed_logo_data_uri, health_label

# Up to twenty rows in view at once (the grid scrolls through the rest of a page).
ROW_HEIGHT = 34
VISIBLE_ROWS = 20
# Cell text is 14 px with 8 px of padding on each side.
CELL_PADDING = 16

# Pixels per column, measured: the longest health label needs 130, the longest error label
# 177, a 24-character link id up to about 218, the sandbox's longest bank name 181. With the row
# selection column they fill the ~980 px the grid has at 1440x900.
COLUMN_WIDTHS: dict[str, int] = {
    "Logo": 40,
    "Institution": 186,
    "Health": 134,
    "Error": 182,
    "Customer": 82,
    "Link ID": 222,
    "Last update": 88,
}


def table_height(rows: int) -> int:
    """Pixels for the header and up to VISIBLE_ROWS rows: no empty rows under a short list."""
    return ROW_HEIGHT * (min(max(rows, 1), VISIBLE_ROWS) + 1) + 3


# A connected link whose product refresh failed or is running has no error code; the reason of
# its (healthy) verdict says so, and the Error column shows it rather than a dash.
REFRESH_ISSUE_TEXT = {
    "product_refresh_failed": "Data refresh failed",
    "product_refresh_pending": "Data refresh running",
}


def error_text(error_code: str | None, health_reason: str = "") -> str:
    """The error as the table shows it: what a person would call it (the code is in the
    detail and in the Error filter); an unknown code is shown as it is."""
    if not error_code:
        return REFRESH_ISSUE_TEXT.get(health_reason, "—")
    return ERROR_LABELS.get(error_code, error_code)


def last_change(row: LinkRow) -> datetime:
    """The time "Recently changed first" sorts by, so the column shown and the order agree."""
    return row.updated_at


# The stage of a link's latest relink email (customer outreach) as one sign, so the column
# stays narrow; it is shown only on pages where some link was emailed.
OUTREACH_SIGNS = {
    "not sent": "📤",
    "sent": "📧",
    "opened": "👀",
    "finished": "✅",
    "expired": "⌛",
}
OUTREACH_HELP = (
    "Relink email to the customer: 📤 queued or not sent, 📧 sent, 👀 repair page opened, "
    "✅ relinked, ⌛ link expired, ⚠️ repair not finished"
)


def outreach_sign(stage: str | None) -> str:
    if not stage:
        return ""
    return OUTREACH_SIGNS.get(stage, "⚠️")  # "ended (…)": the repair did not succeed


def table_rows(
    rows: list[LinkRow], *, dark: bool, outreach: dict[str, str] | None = None
) -> list[dict[str, object]]:
    """One dict per row; with ``outreach`` (link id → stage) an Outreach column as well."""
    table: list[dict[str, object]] = []
    for row in rows:
        cells: dict[str, object] = {
            "Logo": framed_logo_data_uri(row, dark=dark),
            "Institution": row.institution_name,
            "Health": health_label(row.health),
            "Error": error_text(row.error_code, row.health_reason),
            "Customer": row.customer_id or "—",
            "Link ID": row.link_id,
            "Last update": last_change(row),
        }
        if outreach:
            cells["Outreach"] = outreach_sign(outreach.get(row.link_id))
        table.append(cells)
    return table


def column_config() -> dict[str, Any]:
    widths = COLUMN_WIDTHS
    return {
        "Outreach": st.column_config.TextColumn("✉️", width=40, help=OUTREACH_HELP),
        "Logo": st.column_config.ImageColumn(
            "Logo", width=widths["Logo"], help="Framed in the bank's brand colour"
        ),
        "Institution": st.column_config.TextColumn("Institution", width=widths["Institution"]),
        "Health": st.column_config.TextColumn("Health", width=widths["Health"]),
        "Error": st.column_config.TextColumn(
            "Error", width=widths["Error"], help="MoneyKit's error code is in the link's detail"
        ),
        "Customer": st.column_config.TextColumn("Customer", width=widths["Customer"]),
        "Link ID": st.column_config.TextColumn("Link ID", width=widths["Link ID"]),
        "Last update": st.column_config.DatetimeColumn(
            "Last update",
            format="MM-DD HH:mm",
            width=widths["Last update"],
            help="When anything about the link last changed (UTC): the order of "
            "“Recently changed first”",
        ),
    }
