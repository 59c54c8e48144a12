"""Alerts: rules stored in the database, evaluated by the workers over rollups and cheap indexed
counts, one alert per incident (the database decides), and notifications sent from an outbox by
their own thread (Slack-compatible webhook, HMAC-signed JSON webhook, email).
"""

from linkdesk.alerts.channels import Channel, build_channels, sign_payload
from linkdesk.alerts.outbox import Dispatcher
from linkdesk.alerts.rules import DEFAULT_RULES, RULE_KINDS, RuleSpec, validate_params
from linkdesk.alerts.runner import AlertRunner
from linkdesk.alerts.service import AlertService

__all__ = [
    "DEFAULT_RULES",
    "RULE_KINDS",
    "AlertRunner",
    "AlertService",
    "Channel",
    "Dispatcher",
    "RuleSpec",
    "build_channels",
    "sign_payload",
    "validate_params",
]
