"""Run the sandbox: ``python -m sandbox --port 8611``.

Accepted client credentials come from ``MONEYKIT_CLIENT_ID`` / ``MONEYKIT_CLIENT_SECRET`` (defaults
below). The secret is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn

from sandbox.app import create_app
from sandbox.webhooks import DEFAULT_FIRST_BACKOFF_S, DEFAULT_RETRY_WINDOW_S, WebhookConfig

DEFAULT_CLIENT_ID = "linkdesk_sandbox_client"
DEFAULT_CLIENT_SECRET = "linkdesk_sandbox_secret"


class _DropQueryString(logging.Filter):
    """Strip query strings from access-log lines: Connect page URLs carry link session tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="Offline MoneyKit emulator (REST API + Connect UI)."
    )
    parser.add_argument("--host", default="localhost", help="interface and host name to serve on")
    parser.add_argument("--port", type=int, default=8611, help="TCP port (default 8611)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the demo data (default 42)")
    parser.add_argument(
        "--demo-links", type=int, default=300, help="number of demo links at start (default 300)"
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="origin clients use, if not http://<host>:<port> (prefixes image URLs)",
    )
    parser.add_argument(
        "--bank-port",
        type=int,
        default=None,
        help="port of OAuth Bank's pages, a separate origin (default: --port + 1)",
    )
    parser.add_argument(
        "--webhook-time-scale",
        type=float,
        default=1.0,
        help="divide webhook retry waits by this (default 1: real time, about two hours)",
    )
    parser.add_argument(
        "--webhook-retry-window",
        type=float,
        default=DEFAULT_RETRY_WINDOW_S,
        help="seconds of retrying before a webhook is given up (default 7200)",
    )
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="start with MoneyKit's rate limits off"
    )
    parser.add_argument(
        "--demo-webhook-url",
        default=os.environ.get("MONEYKIT_DEMO_WEBHOOK_URL"),
        help="webhook URL of the demo links, as the customer app sets it "
        "(default: $MONEYKIT_DEMO_WEBHOOK_URL, else none)",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help="a redirect URI registered for the client, '*' as port for any port (repeatable; "
        "default http://localhost:*/oauth_return and http://127.0.0.1:*/oauth_return)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    return parser.parse_args(argv)


async def _serve(servers: list[uvicorn.Server]) -> None:
    # Both servers share one loop and one app state; stop both when either stops.
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.demo_links < 0:
        print("--demo-links must be >= 0", file=sys.stderr)
        return 2
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    bank_port = args.bank_port or args.port + 1
    bank_url = f"http://{args.host}:{bank_port}"
    client_id = os.environ.get("MONEYKIT_CLIENT_ID") or DEFAULT_CLIENT_ID
    client_secret = os.environ.get("MONEYKIT_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET
    app = create_app(
        client_id=client_id,
        client_secret=client_secret,
        seed=args.seed,
        demo_links=args.demo_links,
        public_url=public_url,
        bank_url=bank_url,
        webhook_config=WebhookConfig(
            retry_window_s=args.webhook_retry_window,
            first_backoff_s=DEFAULT_FIRST_BACKOFF_S,
            time_scale=args.webhook_time_scale,
        ),
        rate_limits=not args.no_rate_limits,
        demo_webhook_url=args.demo_webhook_url,
        redirect_uris=args.redirect_uri,
    )
    logging.getLogger("uvicorn.access").addFilter(_DropQueryString())
    print(f"MoneyKit sandbox: {public_url}  (API base URL and Connect UI host)", flush=True)
    print(
        f"  client id {client_id}; seed {args.seed}; {args.demo_links} demo links; "
        f"controls at {public_url}/_sandbox/; OAuth Bank pages at {bank_url}",
        flush=True,
    )
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
        ),
        uvicorn.Server(
            uvicorn.Config(
                app.state.bank_app,
                host=args.host,
                port=bank_port,
                log_level=args.log_level,
                lifespan="off",
            )
        ),
    ]
    asyncio.run(_serve(servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
