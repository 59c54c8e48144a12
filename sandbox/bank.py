"""OAuth Bank's own pages, served on a separate origin (``--bank-port``, default port + 1).

A real OAuth bank lives on a third origin: neither the dashboard nor the Connect UI. The Connect
UI opens ``/oauth/authorize?state=...`` here in a popup; the user allows or denies, and the bank
redirects to the link session's ``redirect_uri`` with ``state`` plus ``code`` (allowed) or
``error=access_denied`` (denied). The answer is also stored on the link session, so a return page
that lost its opener can still finish through ``/continue``.

With ``/_sandbox/oauth {"cut_opener": true}`` the consent page sends
``Cross-Origin-Opener-Policy: same-origin``, which makes the browser cut ``window.opener`` of the
popup, as some real banks do.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.errors import ConnectError
from sandbox.state import SandboxState

_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
_STYLE = """
body { font-family: system-ui, sans-serif; background: #f3f6fb; margin: 0; }
main { max-width: 420px; margin: 48px auto; background: #fff; border-radius: 16px;
       padding: 28px; box-shadow: 0 10px 40px rgba(0,0,0,.12); }
h1 { font-size: 1.4rem; margin: 0 0 8px; color: #0b3d91; }
ul { padding-left: 20px; }
.actions { display: flex; gap: 12px; margin-top: 24px; }
button { flex: 1; height: 44px; border-radius: 10px; font-size: 1rem; cursor: pointer; }
.allow { background: #0b3d91; color: #fff; border: none; }
.deny { background: #fff; color: #0b3d91; border: 1px solid #0b3d91; }
"""


def default_bank_url(public_url: str) -> str:
    """The bank origin next to ``public_url``: same host, port + 1."""
    parts = urlsplit(public_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port + 1}"


def _page(title: str, body: str, *, status: int = 200, cut_opener: bool = False) -> Response:
    headers = {
        "Content-Security-Policy": _CSP,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    if cut_opener:
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=headers)


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


async def authorize(request: Request) -> Response:
    state = _state(request)
    oauth_state = request.query_params.get("state", "")
    session = state.connect.oauth_session(oauth_state) if oauth_state else None
    if session is None or session.status == "completed" or session.oauth_institution_id is None:
        return _page(
            "OAuth Bank",
            "<h1>Request expired</h1><p>This sign-in request is not valid any more. "
            "Close this window and start again.</p>",
            status=400,
        )
    inst = state.institutions[session.oauth_institution_id]
    app_name = html.escape(state.app_name)
    body = f"""
<h1>{html.escape(inst.name)}</h1>
<p>You are signed in to {html.escape(inst.name)} (sandbox).</p>
<p><strong>{app_name}</strong> would like to access:</p>
<ul><li>Account names and balances</li><li>Transactions</li></ul>
<form method="post" action="/oauth/decision">
  <input type="hidden" name="state" value="{html.escape(oauth_state)}">
  <div class="actions">
    <button class="deny" type="submit" name="decision" value="deny">Deny</button>
    <button class="allow" type="submit" name="decision" value="allow">Allow</button>
  </div>
</form>"""
    return _page(f"{inst.name}: authorise", body, cut_opener=state.connect.cut_opener)


async def decision(request: Request) -> Response:
    state = _state(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    oauth_state = (form.get("state") or [""])[0]
    choice = (form.get("decision") or [""])[0]
    if choice not in ("allow", "deny"):
        return _page("OAuth Bank", "<h1>Choose Allow or Deny.</h1>", status=400)
    try:
        _session, target = state.connect.oauth_decide(oauth_state, choice == "allow")
    except ConnectError as exc:
        return _page("OAuth Bank", f"<h1>{html.escape(exc.displayed_message)}</h1>", status=400)
    return RedirectResponse(target, status_code=303, headers={"Referrer-Policy": "no-referrer"})


async def index(request: Request) -> Response:
    return _page("OAuth Bank", "<h1>OAuth Bank</h1><p>Sandbox bank. Nothing to see here.</p>")


def create_bank_app(state: SandboxState) -> Starlette:
    """The bank pages, sharing the sandbox's state (run on their own port)."""
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/oauth/authorize", authorize, methods=["GET"]),
            Route("/oauth/decision", decision, methods=["POST"]),
        ]
    )
    app.state.sandbox = state
    return app
