"""MoneyKit webhooks: signature verification, the receiver and its HTTP route."""

from linkdesk.webhooks.receiver import ApplyReport, ReceiveResult, WebhookReceiver
from linkdesk.webhooks.verify import JwksCache, JwksUnavailable, Reason, Verdict, WebhookVerifier

__all__ = [
    "ApplyReport",
    "JwksCache",
    "JwksUnavailable",
    "Reason",
    "ReceiveResult",
    "Verdict",
    "WebhookReceiver",
    "WebhookVerifier",
]
