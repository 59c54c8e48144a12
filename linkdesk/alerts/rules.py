"""Kinds of alert rule, their parameters with limits, and the rules a fresh install has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHANNEL_NAMES",
    "DEFAULT_RULES",
    "RULE_KINDS",
    "DefaultRule",
    "Param",
    "RuleSpec",
    "validate_params",
]

CHANNEL_NAMES = ("slack", "webhook", "email")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    label: str
    default: float
    minimum: float
    maximum: float
    integer: bool = True


@dataclass(frozen=True, slots=True)
class RuleSpec:
    kind: str
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)


RULE_KINDS: dict[str, RuleSpec] = {
    spec.kind: spec
    for spec in (
        RuleSpec(
            "bank_error_spike",
            "A bank's links break faster than its own trailing baseline: links that entered an "
            "error state in the window, less those that came back, against the bank's average "
            "per window over the baseline.",
            (
                Param("window_minutes", "Window (minutes, multiple of 5)", 15, 5, 240),
                Param("baseline_hours", "Baseline (hours before the window)", 24, 1, 168),
                Param("factor", "Times the baseline", 3.0, 1.0, 100.0, integer=False),
                Param("min_links", "At least this many links", 5, 1, 100_000),
            ),
        ),
        RuleSpec(
            "needs_relink",
            "Links needing relink above a number, or growing faster than a number per hour.",
            (
                Param("max_links", "More than this many links", 100, 0, 10_000_000),
                Param(
                    "growth_per_hour", "Or growing by more than this per hour", 50, 1, 10_000_000
                ),
            ),
        ),
        RuleSpec(
            "stuck_links",
            "Links stuck in Connect or waiting for the token exchange past the stuck threshold.",
            (Param("max_links", "More than this many links", 10, 0, 10_000_000),),
        ),
        RuleSpec(
            "sync_lag",
            "The most overdue sync job has waited longer than this.",
            (Param("max_minutes", "Lag above (minutes)", 30, 1, 10_000),),
        ),
        RuleSpec(
            "webhook_lag",
            "The oldest verified webhook event not applied yet is older than this.",
            (Param("max_minutes", "Lag above (minutes)", 10, 1, 10_000),),
        ),
        RuleSpec(
            "webhook_verification_failures",
            "Webhook deliveries refused by signature verification in the window (someone is "
            "forging them, or MoneyKit rotated its keys).",
            (
                Param("window_minutes", "Window (minutes)", 15, 1, 1440),
                Param("max_rejected", "At least this many refused", 10, 1, 1_000_000),
            ),
        ),
        RuleSpec(
            "moneykit_errors",
            "Share of the worker's MoneyKit reads that failed (5xx, network) or were rate-limited "
            "(429) in the window.",
            (
                Param("window_minutes", "Window (minutes)", 15, 1, 1440),
                Param("max_percent", "Above this percentage", 20, 1, 100),
                Param("min_attempts", "Over at least this many reads", 20, 1, 1_000_000),
            ),
        ),
        RuleSpec(
            "discovery_suspect",
            "The last discovery listing looked incomplete (many known links missing from it), "
            "so links were not marked deleted.",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class DefaultRule:
    id: str
    kind: str
    name: str
    renotify_minutes: int = 60


DEFAULT_RULES: tuple[DefaultRule, ...] = (
    DefaultRule("bank_error_spike", "bank_error_spike", "Bank error spike", 30),
    DefaultRule("needs_relink", "needs_relink", "Links needing relink"),
    DefaultRule("stuck_links", "stuck_links", "Stuck links"),
    DefaultRule("sync_lag", "sync_lag", "Sync lag", 30),
    DefaultRule("webhook_lag", "webhook_lag", "Webhook lag", 30),
    DefaultRule(
        "webhook_verification_failures",
        "webhook_verification_failures",
        "Webhook verification failures",
        30,
    ),
    DefaultRule("moneykit_errors", "moneykit_errors", "MoneyKit errors and 429s", 30),
    DefaultRule("discovery_suspect", "discovery_suspect", "Suspect discovery listing", 240),
)


def default_params(kind: str) -> dict[str, float]:
    return {p.name: p.default for p in RULE_KINDS[kind].params}


def validate_params(kind: str, raw: dict[str, Any]) -> dict[str, float]:
    """The rule's parameters checked against their limits; a clear ValueError otherwise.

    Unknown names are refused rather than dropped, so a typo is not silently ignored.
    """
    spec = RULE_KINDS.get(kind)
    if spec is None:
        raise ValueError(f"unknown rule kind {kind!r}")
    known = {p.name: p for p in spec.params}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) for {kind}: {', '.join(unknown)}")
    clean: dict[str, float] = {}
    for name, param in known.items():
        value = raw.get(name, param.default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{param.label}: a number is needed")
        if not param.minimum <= value <= param.maximum:
            raise ValueError(
                f"{param.label}: must be between {param.minimum:g} and {param.maximum:g}"
            )
        if param.integer and value != int(value):
            raise ValueError(f"{param.label}: a whole number is needed")
        clean[name] = int(value) if param.integer else float(value)
    if kind == "bank_error_spike" and int(clean["window_minutes"]) % 5:
        raise ValueError("Window (minutes, multiple of 5): must be a multiple of 5")
    return clean
