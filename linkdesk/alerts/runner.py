"""What a worker runs for alerts: the evaluation on its interval, the dispatcher in its thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from linkdesk.alerts.outbox import Dispatcher
from linkdesk.alerts.service import AlertService, EvaluationReport

__all__ = ["AlertRunner"]

log = logging.getLogger("linkdesk.alerts")


class AlertRunner:
    """What a worker runs: an evaluation every ``interval`` (called from its rounds, quick: a few
    indexed queries) and the dispatcher in a thread of its own, so a channel that hangs for its
    whole timeout never delays a round."""

    def __init__(
        self,
        service: AlertService,
        dispatcher: Dispatcher,
        *,
        interval: timedelta,
        monotonic: Callable[[], float],
    ) -> None:
        self.service = service
        self.dispatcher = dispatcher
        self._interval = interval.total_seconds()
        self._monotonic = monotonic
        self._last: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def tick(self) -> EvaluationReport | None:
        """Evaluate when the interval has passed; never raises (alerts must not stop syncing)."""
        now = self._monotonic()
        if self._last is not None and now - self._last < self._interval:
            return None
        self._last = now
        try:
            report = self.service.evaluate()
        except Exception:
            log.exception("alert evaluation failed")
            return None
        if report.fired or report.reminded or report.resolved:
            self.dispatcher.wake.set()
        return report

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.dispatcher.run_forever,
            args=(self._stop,),
            name="linkdesk-alerts",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self.dispatcher.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
