"""The words of customer outreach: the email template, its placeholders and checks, one
customer's rendered email, and the Links filters an outreach is made from, as staff read them.
Text only: no I/O."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from linkdesk.errors import ServiceError
from linkdesk.health import Health
from linkdesk.read.links import LinkFilters

__all__ = [
    "DEFAULT_TEMPLATE",
    "PLACEHOLDERS",
    "EmailTemplate",
    "RenderedEmail",
    "TemplateInvalid",
    "check_template",
    "describe_filters",
    "filters_as_json",
    "filters_from_params",
    "render_email",
]

PLACEHOLDERS = ("institution_name", "customer_id", "link", "expires_at", "logo")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LOGO_URI = re.compile(r"data:image/(?:svg\+xml|png|jpeg|webp|gif);base64,[A-Za-z0-9+/]+={0,2}")


class TemplateInvalid(ServiceError):
    pass


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    subject: str
    text: str
    html: str
    updated_by: str | None = None
    updated_at: datetime | None = None


DEFAULT_TEMPLATE = EmailTemplate(
    subject="Please reconnect your {{institution_name}} account",
    text=(
        "Hello,\n\n"
        "Your connection to {{institution_name}} stopped working, so we can no longer see your "
        "accounts there. Please reconnect it with this link:\n\n"
        "{{link}}\n\n"
        "The link works once, until {{expires_at}}. You sign in to your bank in a secure "
        "window; we never see your bank password.\n\n"
        "If you did not expect this email, you can ignore it.\n"
    ),
    html=(
        '<!doctype html>\n<html><body style="font-family:Arial,sans-serif;color:#222">\n'
        "{{logo}}\n"
        "<p>Hello,</p>\n"
        "<p>Your connection to <strong>{{institution_name}}</strong> stopped working, so we can "
        "no longer see your accounts there. Please reconnect it:</p>\n"
        '<p><a href="{{link}}" style="background:#1d4ed8;color:#fff;padding:10px 16px;'
        'border-radius:6px;text-decoration:none">Reconnect {{institution_name}}</a></p>\n'
        "<p>The link works once, until {{expires_at}}. You sign in to your bank in a secure "
        "window; we never see your bank password.</p>\n"
        '<p style="color:#666;font-size:12px">If the button does not work, open this address: '
        "{{link}}<br>If you did not expect this email, you can ignore it.</p>\n"
        "</body></html>\n"
    ),
)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    to: str
    subject: str
    text: str
    html: str


def describe_filters(filters: LinkFilters, institution_name: str | None = None) -> str:
    parts = []
    if filters.health is not None:
        parts.append(f"health {filters.health.value}")
    if filters.error_code:
        parts.append(f"error {filters.error_code}")
    if filters.institution_id:
        parts.append(f"bank {institution_name or filters.institution_id}")
    if filters.customer:
        parts.append(f"customer starts with {filters.customer}")
    if filters.search:
        parts.append(f"search {filters.search}")
    return ", ".join(parts) if parts else "all links"


def filters_as_json(filters: LinkFilters) -> dict[str, str]:
    values = {
        "health": filters.health.value if filters.health else None,
        "error": filters.error_code,
        "institution": filters.institution_id,
        "customer": filters.customer,
        "q": filters.search,
    }
    return {key: value for key, value in values.items() if value}


def filters_from_params(params: Mapping[str, str | None]) -> LinkFilters:
    """The Links page's filters from its query parameters (health, error, institution, …)."""
    health = params.get("health")
    try:
        health_value = Health(health) if health else None
    except ValueError as exc:
        raise ServiceError(f"Unknown health filter {health!r}.") from exc
    return LinkFilters(
        health=health_value,
        error_code=(params.get("error") or "").strip() or None,
        institution_id=(params.get("institution") or "").strip() or None,
        customer=(params.get("customer") or "").strip() or None,
        search=(params.get("q") or "").strip() or None,
    )


def check_template(template: EmailTemplate) -> None:
    problems = []
    for part, text in (
        ("subject", template.subject),
        ("text", template.text),
        ("HTML", template.html),
    ):
        if not text.strip():
            problems.append(f"the {part} is empty")
        for line_no, line in enumerate(text.splitlines() or [""], start=1):
            for match in _PLACEHOLDER.finditer(line):
                if match.group(1) not in PLACEHOLDERS:
                    problems.append(
                        f"unknown placeholder {{{{{match.group(1)}}}}} in the {part}, "
                        f"line {line_no}"
                    )
    for part, text in (("text", template.text), ("HTML", template.html)):
        names = {m.group(1) for m in _PLACEHOLDER.finditer(text)}
        if "link" not in names:
            problems.append(f"the {part} must contain {{{{link}}}}")
    if "{{link}}" in template.subject.replace(" ", ""):
        problems.append("the subject must not contain the link")
    if problems:
        raise TemplateInvalid("The template was not saved: " + "; ".join(problems) + ".")


def _fill(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)


def render_email(
    template: EmailTemplate,
    *,
    to: str,
    institution_name: str,
    customer_id: str,
    link: str,
    expires_at: datetime,
    logo: str | None,
) -> RenderedEmail:
    """The email for one customer. In the HTML every value is escaped, and the logo is the
    stored ``data:`` image or nothing (never a remote URL)."""
    expiry = f"{expires_at:%d %B %Y, %H:%M} UTC"
    plain = {
        "institution_name": institution_name,
        "customer_id": customer_id,
        "link": link,
        "expires_at": expiry,
        "logo": "",
    }
    logo_html = ""
    if logo and _LOGO_URI.fullmatch(logo):
        logo_html = (
            f'<img src="{logo}" alt="{html.escape(institution_name)}" height="40" '
            'style="height:40px;margin-bottom:12px">'
        )
    escaped = {key: html.escape(value, quote=True) for key, value in plain.items()}
    escaped["logo"] = logo_html
    return RenderedEmail(
        to=to,
        subject=" ".join(_fill(template.subject, plain).split()),
        text=_fill(template.text, plain),
        html=_fill(template.html, escaped),
    )
