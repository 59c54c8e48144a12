"""MoneyKit webhooks: signature verification, the receiver and its HTTP route.

Applying what was received is a service: :mod:`linkdesk.services.webhook_apply`.
"""

from linkdesk.webhooks.receiver import ReceiveResult, WebhookReceiver
from linkdesk.webhooks.verify import JwksCache, JwksUnavailable, Reason, Verdict, WebhookVerifier

__all__ = [
    "JwksCache",
    "JwksUnavailable",
    "Reason",
    "ReceiveResult",
    "Verdict",
    "WebhookReceiver",
    "WebhookVerifier",
]
