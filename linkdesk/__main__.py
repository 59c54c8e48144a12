"""Command line: ``python -m linkdesk migrate``, ``sync``, ``worker``, ``demo-reset`` and
``user add``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from linkdesk.moneykit.errors import APIConnectionError, AuthenticationError, MoneyKitError
from linkdesk.settings import Settings
from linkdesk.store.engine import migrate, sqlite_file_path

if TYPE_CHECKING:
    from linkdesk.services.worker import RoundReport

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_UNREACHABLE = 2


def _migrate(settings: Settings) -> int:
    path = sqlite_file_path(settings.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    where = str(path) if path is not None else settings.database_url.split("@")[-1]
    print(f"Database is at the latest schema ({where}).")
    return EXIT_OK


def _sync(settings: Settings) -> int:
    from linkdesk.bootstrap import build_services

    services = build_services(settings)
    try:
        interactive = sys.stdout.isatty()

        def progress(done: int, total: int) -> None:
            if interactive:
                end = "\n" if done == total else ""
                print(f"\rSyncing links: {done}/{total}", end=end, flush=True)
                return
            # Logs get a line per tenth, not one per link.
            step = max(1, total // 10)
            if done == total or done % step == 0:
                print(f"Syncing links: {done}/{total}", flush=True)

        try:
            report = services.discovery.sync_all(progress, actor=settings.staff_user)
        except APIConnectionError as exc:
            print(
                f"MoneyKit is unreachable at {settings.moneykit_base_url}: {exc.user_message}",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
        except AuthenticationError as exc:
            print(f"Sync failed: {exc.user_message}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except MoneyKitError as exc:
            print(f"Sync failed: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        print(report.summary)
        for failure in report.failures[:20]:
            print(f"  {failure.link_id}: {failure.error}", file=sys.stderr)
        if len(report.failures) > 20:
            print(f"  … and {len(report.failures) - 20} more", file=sys.stderr)
        return EXIT_PARTIAL if report.failed or report.suspect else EXIT_OK
    finally:
        services.close()


def _worker(settings: Settings, *, once: bool) -> int:
    from linkdesk.bootstrap import build_services

    services = build_services(settings)
    stop = threading.Event()
    metrics_server = None
    if settings.worker_metrics_port:
        from linkdesk.metrics import serve_metrics

        token = settings.metrics_token
        metrics_server, _thread = serve_metrics(
            services.metrics,
            host=settings.worker_metrics_host,
            port=settings.worker_metrics_port,
            token=token.get_secret_value() if token else None,
        )
        print(
            f"Metrics at http://{settings.worker_metrics_host}:{settings.worker_metrics_port}"
            "/metrics",
            flush=True,
        )

    def _stop(signum: int, _frame: object) -> None:
        print(f"Stopping the worker ({signal.Signals(signum).name}).", flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    last_line = 0.0

    def progress(report: RoundReport) -> None:
        nonlocal last_line
        quiet = report.claimed == 0 and not report.discovery and not report.paused
        # One line per busy round, and a heartbeat a minute when idle.
        if quiet and time.monotonic() - last_line < 60:
            return
        last_line = time.monotonic()
        status = services.worker.status()
        print(
            f"{status.now:%Y-%m-%d %H:%M:%S} worker {services.worker.worker_id}: "
            f"{report.summary}; due {status.jobs_due}, lag {int(status.lag.total_seconds())} s, "
            f"{status.links_synced_last_hour} links synced in the last hour",
            flush=True,
        )

    try:
        if once:
            progress(services.worker.run_once())
            return EXIT_OK
        print(f"Worker {services.worker.worker_id} started; Ctrl-C or SIGTERM stops it.")
        services.worker.run_forever(stop, on_round=progress)
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        services.close()


def _demo_reset(settings: Settings, *, unless_built: bool) -> int:
    from linkdesk.auth import Actor, Role
    from linkdesk.bootstrap import build_services
    from linkdesk.errors import ServiceError

    services = build_services(settings)
    try:
        status = services.demo.status()
        if not status.enabled:
            print("Demo mode is off (LINKDESK_DEMO_MODE, or the switch on the Demo page).")
            return EXIT_PARTIAL
        if unless_built and status.world_links == settings.demo_links and status.links_in_store:
            print(f"The demo world is built ({status.world_links:,} links); keeping it.")
            return EXIT_OK
        # Whoever can run this command can reach the database directly: an admin by definition.
        actor = Actor(f"cli:{settings.staff_user}", Role.ADMIN)
        shown = {"text": ""}

        def progress(text: str, _fraction: float) -> None:
            if text != shown["text"] and (not text.startswith("Discovering") or "000 of" in text):
                shown["text"] = text
                print(f"  {text}", flush=True)

        try:
            report = services.demo.reset(actor, progress)
        except ServiceError as exc:
            print(f"Demo reset failed: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        print(f"Demo world built: {report.summary}.")
        return EXIT_OK
    finally:
        services.close()


def _user_add(settings: Settings, name: str, role: str, *, print_only: bool) -> int:
    import getpass
    import json

    from linkdesk.auth import hash_password

    # Typed twice and never echoed, so the password is in no shell history or process list.
    password = getpass.getpass(f"Password for {name}: ")
    if password != getpass.getpass("The same password again: "):
        print("The passwords do not match; nothing was saved.", file=sys.stderr)
        return EXIT_PARTIAL
    if len(password) < 12:
        print("Use at least 12 characters; nothing was saved.", file=sys.stderr)
        return EXIT_PARTIAL
    if print_only:
        entry = {name: {"role": role, "password_hash": hash_password(password)}}
        print("Add this entry to LINKDESK_USERS (or [linkdesk.users] in the secrets):")
        print(json.dumps(entry))
        return EXIT_OK
    from linkdesk.bootstrap import build_services

    services = build_services(settings)
    try:
        services.staff.add_user(name, role, password)
    finally:
        services.close()
    print(f"Saved {name} ({role}) in the database; they can sign in on every replica.")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linkdesk", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="create or upgrade the database schema")
    commands.add_parser("sync", help="read every link from MoneyKit into the store")
    worker = commands.add_parser(
        "worker", help="keep links in step with MoneyKit until stopped (SIGTERM/SIGINT)"
    )
    worker.add_argument("--once", action="store_true", help="run a single round and exit")
    demo = commands.add_parser(
        "demo-reset", help="rebuild the demo world in the offline sandbox (demo mode only)"
    )
    demo.add_argument(
        "--unless-built",
        action="store_true",
        help="keep a demo world that is already built with LINKDESK_DEMO_LINKS links",
    )
    user = commands.add_parser("user", help="manage local staff accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_add = user_commands.add_parser(
        "add", help="add a staff account or set its password (prompts for it twice)"
    )
    user_add.add_argument("name")
    user_add.add_argument("--role", choices=["viewer", "support", "admin"], required=True)
    user_add.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print a LINKDESK_USERS entry instead of saving the account in the database",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    settings = Settings()
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "worker":
        return _worker(settings, once=args.once)
    if args.command == "user":
        return _user_add(settings, args.name, args.role, print_only=args.print_only)
    if args.command == "demo-reset":
        return _demo_reset(settings, unless_built=args.unless_built)
    return _sync(settings)


if __name__ == "__main__":
    sys.exit(main())
