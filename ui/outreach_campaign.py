"""One outreach campaign on the Outreach page: its progress while a background thread sends
it, then what was sent and what was not, with why."""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Actor
from linkdesk.bootstrap import Services
from linkdesk.services.outreach_tracking import CampaignProgress
from ui.errors import guarded


def _status_text(progress: CampaignProgress) -> str:
    return (
        f"{progress.done} of {progress.total} done · {progress.sent} sent · "
        f"{progress.failed} failed · {progress.skipped} not sent"
    )


@st.fragment(run_every=1)
@guarded("outreach.progress")
def _follow(services: Services, actor: Actor, campaign_id: str) -> None:
    """The campaign's progress as the background sender records it, polled every second."""
    outreach = services.outreach
    progress = outreach.progress(campaign_id)
    if progress is None:
        return
    st.progress(progress.fraction, text=_status_text(progress))
    if progress.finished:
        st.rerun()  # the whole page shows the final report
    if not progress.sender_alive and progress.waiting:
        st.warning("Nobody is sending this campaign right now (the sending process stopped).")
        if st.button("Resume sending", key="outreach.resume"):
            outreach.resume(campaign_id, actor)
            st.rerun(scope="fragment")
    if st.button("Stop sending", key="outreach.stop"):
        outreach.stop(campaign_id, actor)
        st.rerun()


def render_campaign(services: Services, actor: Actor, campaign_id: str) -> None:
    """Where one campaign stands: followed live while it sends, then its report."""
    outreach = services.outreach
    progress = outreach.progress(campaign_id)
    if progress is None:
        st.error("This campaign is not known to Linkdesk.")
        return
    # Filter values come from a URL: shown as text, never as Markdown.
    st.text(
        f"Started by {progress.created_by} at {progress.created_at:%Y-%m-%d %H:%M} UTC for the "
        f"Links view: {progress.description}"
    )
    if not progress.finished:
        _follow(services, actor, campaign_id)
        return
    st.progress(progress.fraction, text=_status_text(progress))
    if progress.status == "stopped":
        st.warning(f"Stopped. {progress.sent} emails were sent.", icon="⏹️")
    else:
        sent = progress.sent
        st.success(f"Done: {sent} relink email{'' if sent == 1 else 's'} sent.", icon="✅")
    problems = outreach.messages(campaign_id, statuses=("failed", "skipped"))
    if problems:
        st.subheader("Not emailed", divider="orange")
        st.dataframe(
            [
                {
                    "Customer": row.customer_id or "—",
                    "Link": row.link_id,
                    "Address": row.email or "—",
                    "Result": row.status,
                    "Why": row.detail or "",
                }
                for row in problems
            ],
            key="outreach.problems",
            hide_index=True,
            width="stretch",
        )
