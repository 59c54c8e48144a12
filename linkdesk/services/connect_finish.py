"""Applying the Connect component's log, and acting once on the session's end.

Applying is idempotent. Events are stored once per ``(session_id, seq)``, and the session's end is
claimed by one conditional UPDATE on the session row: only the caller that wins the claim
exchanges the token or completes the relink. A rerun, a double click or a second thread (the
other window of an OAuth flow) gets the recorded outcome.

The path of a Connect success to the ``links`` row: :meth:`LogApplier.apply_log` →
:func:`~linkdesk.connect_log.new_entries` (parsed once) → ``insert_event`` → the terminal entry →
``claim_completion`` → ``MoneyKitClient.exchange_token`` → ``LinkIngestor.ingest``
(``upsert_link``) → ``finish_session``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from linkdesk.auth import Actor, Permission, require
from linkdesk.connect_log import LogEntry, new_entries, terminal_entry
from linkdesk.health import Health, link_health
from linkdesk.moneykit.errors import (
    MoneyKitError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from linkdesk.services.connect_base import ApplyOutcome, ConnectBase, Outcome
from linkdesk.services.connect_text import exit_fields, stored_payload
from linkdesk.services.errors import UnknownSession
from linkdesk.store import connect_repository as repo
from linkdesk.store.models import ConnectSession

__all__ = ["LogApplier"]

# Products a relink asks MoneyKit to refresh at once (the ones staff look at first); others wait
# for their normal schedule, since refreshes are limited per link and per day.
REFRESH_AFTER_RELINK = ("accounts", "transactions")
# A completion (exchange + reads) takes seconds; one claimed this long ago was interrupted.
STALE_COMPLETION = timedelta(minutes=5)
# How long an apply waits for another caller (the other window of an OAuth flow) to finish the
# session it claimed: an exchange and the reads after it take seconds.
FINISHER_WAIT_S = 15.0
FINISHER_POLL_S = 0.2


class LogApplier(ConnectBase):
    def _persist(self, session_id: str, entries: list[object]) -> tuple[int, tuple[int, ...]]:
        now = self._clock()
        with self._store.write() as session:
            if session.get(ConnectSession, session_id) is None:
                raise UnknownSession(session_id)
            fresh = new_entries(
                entries, repo.stored_seqs(session, session_id), session_id=session_id
            )
            inserted = sum(
                repo.insert_event(
                    session,
                    {
                        "session_id": session_id,
                        "seq": entry.seq,
                        "type": entry.type,
                        "name": (entry.event_name or entry.type)[:100],
                        "payload": stored_payload(entry),
                        "at": entry.at,
                        "recorded_at": now,
                    },
                )
                for entry in fresh
            )
        return inserted, fresh.gaps

    def apply_log(
        self, session_id: str, entries: Iterable[object] | None, *, actor: Actor | str
    ) -> ApplyOutcome:
        """Store new log entries and, once per session, act on its end (exchange, relink, exit).

        ``entries`` is the component's cumulative log as received; malformed entries and
        entries of other sessions are ignored. Finishing a session needs the permission that
        starting it needed (``link.start`` or ``link.relink``).
        """
        actor = self._actor(actor)
        with self._store.read() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            mode = row.mode
        require(actor, Permission.RELINK if mode == "relink" else Permission.START_LINK)
        return self.apply_log_as(session_id, entries, actor=actor)

    def apply_log_as(
        self, session_id: str, entries: Iterable[object] | None, *, actor: Actor | str
    ) -> ApplyOutcome:
        """:meth:`apply_log` without the role check (the customer-link flow authorised it)."""
        entries = list(entries or [])
        new, gaps = self._persist(session_id, entries)
        self._fail_if_interrupted(session_id, actor)
        # The end is looked for in the whole log, not only in new entries: a ``continue`` log
        # starts numbering again, and its success must still be acted on once.
        everything = new_entries(entries, (), session_id=session_id)
        final = terminal_entry(everything)
        if final is not None:
            if final.type == "exit":
                self._finish_exit(session_id, final, actor)
            elif final.type == "success":
                self._finish_success(session_id, final, actor)
            else:
                self._finish_relink(session_id, final, actor)
            self._await_other_finisher(session_id)
        return self._outcome(session_id, new, gaps)

    def _await_other_finisher(self, session_id: str) -> None:
        """Wait while another caller finishes this session, so both report its outcome.

        An OAuth bank that cuts the popup's opener makes Connect end in two windows with the same
        token: the first to claim the session exchanges it, and the second must then show the
        same success, not "still open". Bounded: an interrupted finisher is closed by
        :meth:`_fail_if_interrupted` on a later apply.
        """
        for _ in range(int(FINISHER_WAIT_S / FINISHER_POLL_S)):
            with self._store.read() as session:
                row = session.get(ConnectSession, session_id)
                if row is None or row.outcome != "pending" or row.completion_claimed_at is None:
                    return
            self._sleep(FINISHER_POLL_S)

    def _fail_if_interrupted(self, session_id: str, actor: Actor | str) -> None:
        """Close a session whose finisher stopped half-way (process killed during the exchange).

        Without this the session would say "finishing" forever; the link itself, if MoneyKit
        made it, is picked up by the next sync.
        """
        now = self._clock()
        with self._store.write() as session:
            row = repo.fail_interrupted(
                session,
                session_id,
                now=now,
                claimed_before=now - STALE_COMPLETION,
                message=(
                    "Linkdesk stopped while finishing this session; the next sync will "
                    "show the link if MoneyKit created it."
                ),
            )
            if row is not None:
                self._audit.add(
                    session,
                    actor=actor,
                    action="connect.interrupted",
                    outcome="failed",
                    link_id=row.link_id,
                    customer_id=row.customer_id,
                    detail="completion claimed but never finished",
                )

    def _outcome(self, session_id: str, new: int, gaps: tuple[int, ...]) -> ApplyOutcome:
        with self._store.read() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            outcome: Outcome = row.outcome  # type: ignore[assignment]
            message: str | None
            if outcome == "success":
                bank = repo.institution_name(session, row.link_id) or "The bank"
                message = (
                    f"{bank} is connected again (link {row.link_id})."
                    if row.mode == "relink"
                    else f"{bank} linked for customer {row.customer_id} (link {row.link_id})."
                )
            elif outcome == "exit":
                message = row.exit_message
            elif outcome == "failed":
                message = row.failure_message
            elif row.completion_claimed_at is not None:
                message = "Finishing the link…"
            else:
                message = None
            return ApplyOutcome(
                new=new, outcome=outcome, link_id=row.link_id, message=message, gaps=gaps
            )

    def _claim(self, session_id: str) -> ConnectSession | None:
        """Win the right to finish the session; None if someone else already has."""
        with self._store.write() as session:
            return repo.claim_completion(session, session_id, self._clock())

    def _finish(
        self,
        session_id: str,
        *,
        actor: Actor | str,
        action: str,
        outcome: Outcome,
        audit_outcome: str,
        detail: str | None,
        link_id: str | None = None,
        exchanged: bool = False,
        failure_message: str | None = None,
        exit_fields: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        with self._store.write() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            repo.finish_session(
                session,
                row,
                outcome=outcome,
                now=self._clock(),
                link_id=link_id,
                exchanged=exchanged,
                failure_message=failure_message,
                exit_fields=exit_fields,
            )
            self._audit.add(
                session,
                actor=actor,
                action=action,
                outcome=audit_outcome,
                link_id=row.link_id,
                customer_id=row.customer_id,
                detail=detail,
            )
            mode = row.mode
        self._tell_observers(mode, outcome)

    def _finish_exit(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        if self._claim(session_id) is None:
            return
        error = entry.data.get("error")
        fields = exit_fields(error if isinstance(error, Mapping) else None)
        self._finish(
            session_id,
            actor=actor,
            action="connect.exit",
            outcome="exit",
            audit_outcome=fields[0] or "closed",
            detail=fields[1],
            exit_fields=fields,
        )

    def _finish_success(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        claimed = self._claim(session_id)
        if claimed is None:
            return
        customer_id = claimed.customer_id
        token = entry.data.get("exchangeable_token")
        if not isinstance(token, str) or not token:
            self._finish(
                session_id,
                actor=actor,
                action="connect.exchange",
                outcome="failed",
                audit_outcome="failed",
                detail="success without an exchangeable token",
                failure_message="Connect reported success without a token; start again.",
            )
            return
        fetched_at = self._clock()
        try:
            exchanged = self._client.exchange_token(token)
        except MoneyKitError as exc:
            # Not retried: whether MoneyKit consumed the token is unknown, and a second exchange
            # of a consumed token fails anyway. The link, if made, is found by the next sync.
            self._finish(
                session_id,
                actor=actor,
                action="connect.exchange",
                outcome="failed",
                audit_outcome="failed",
                detail=str(exc),
                failure_message=f"The link could not be completed: {exc.user_message}",
            )
            return
        link = exchanged.link
        detail = f"exchanged; state {link.state}"
        try:
            result = self._ingest(
                link,
                source="connect",
                fetcher=self._fetcher(),
                fetched_at=fetched_at,
                customer_id=customer_id,
            )
            if result.accounts_error is not None:
                detail += f"; accounts not read: {result.accounts_error}"
        except MoneyKitError as exc:
            detail += f"; details not stored: {exc}"
        self._finish(
            session_id,
            actor=actor,
            action="connect.exchange",
            outcome="success",
            audit_outcome="success",
            detail=detail,
            link_id=link.link_id,
            exchanged=True,
        )

    def _refresh_after_relink(self, link_id: str) -> str:
        """Ask MoneyKit to fetch fresh data now; a refusal is noted, never fatal.

        429 (refresh limits or the bank's refresh window), 422 (link not ready yet) and 403
        (product not on the link) are expected answers here.
        """
        try:
            self._client.refresh_products(link_id, REFRESH_AFTER_RELINK)
        except RateLimitError:
            return "refresh not possible now (rate limited)"
        except (UnprocessableEntityError, PermissionDeniedError) as exc:
            return f"refresh refused ({exc.error_code or exc.status_code})"
        except MoneyKitError as exc:
            return f"refresh failed: {exc}"
        return "refresh requested"

    def _finish_relink(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        claimed = self._claim(session_id)
        if claimed is None:
            return
        reported = entry.data.get("link_id")
        link_id = claimed.link_id or (reported if isinstance(reported, str) and reported else None)
        detail = "relink completed in Connect"
        still_needs_relink: str | None = None
        if link_id:
            # The refresh only asks MoneyKit to fetch data later, so it does not have to come
            # before the read: both go out at once, and the agent waits for one round trip
            # fewer between Done and the confirmation.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="relink-refresh") as pool:
                refresh = pool.submit(self._refresh_after_relink, link_id)
                fetched_at = self._clock()
                try:
                    # Verify instead of trusting Connect: the state MoneyKit reports now is stored.
                    link = self._client.get_link(link_id)
                    self._ingest(
                        link,
                        completing=True,
                        source="relink",
                        fetcher=self._fetcher(),
                        fetched_at=fetched_at,
                        customer_id=claimed.customer_id,
                    )
                    read = f"; state now {link.state}"
                    if link.error_code:
                        read += f"/{link.error_code}"
                    if link_health(link.state, link.error_code) is Health.NEEDS_RELINK:
                        # Connect's word is not enough (a hostile browser can post a
                        # relink.complete): success is what MoneyKit confirms.
                        still_needs_relink = read.removeprefix("; state now ")
                except MoneyKitError as exc:
                    read = f"; state not re-read: {exc}"
                detail += "; " + refresh.result() + read
        if still_needs_relink is not None:
            self._finish(
                session_id,
                actor=actor,
                action="connect.relink",
                outcome="failed",
                audit_outcome="unconfirmed",
                detail=detail,
                link_id=link_id,
                failure_message=(
                    "Connect reported the relink as finished, but MoneyKit still reports "
                    f"{still_needs_relink}: the link still needs a relink."
                ),
            )
            return
        self._finish(
            session_id,
            actor=actor,
            action="connect.relink",
            outcome="success",
            audit_outcome="success",
            detail=detail,
            link_id=link_id,
        )
