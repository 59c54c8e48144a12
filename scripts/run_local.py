"""Start Linkdesk on this machine: the local MoneyKit sandbox, the database and the dashboard.

This is the embedded default that `make run` uses. It is deliberately outside the `linkdesk`
package: the core only knows a MoneyKit base URL, never whether a sandbox is behind it.

Steps: start `python -m sandbox` on its own port and wait until it answers, upgrade the
database with Alembic, discover every link of the application through the API
(`python -m linkdesk sync`), then run the dashboard until Ctrl-C, which stops both.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIENT_ID = "linkdesk_sandbox_client"
DEFAULT_CLIENT_SECRET = "linkdesk_sandbox_secret"  # the sandbox's documented default
sys.path.insert(0, str(ROOT))
from linkdesk.settings import Settings  # noqa: E402  (needs the repository root on the path)

# The demo world's defaults (LINKDESK_DEMO_SEED / LINKDESK_DEMO_LINKS override them).
DEFAULT_DEMO_SEED = Settings.model_fields["demo_seed"].default
DEFAULT_DEMO_LINKS = Settings.model_fields["demo_links"].default


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The sandbox exited with code {process.returncode} before it was up.")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"The sandbox did not answer on {url} within {timeout:.0f} s.")


def write_private(path: Path, content: bytes) -> None:
    """Create ``path`` readable by its owner only (0600), whatever the umask: it holds secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def make_private(path: Path) -> None:
    """Tighten a secrets file an earlier version left readable by others."""
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)
        print(f"==> Made {path.relative_to(ROOT)} readable by its owner only", flush=True)


def run_step(title: str, args: list[str], env: dict[str, str]) -> None:
    print(f"==> {title}", flush=True)
    completed = subprocess.run(args, cwd=ROOT, env=env, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"'{title}' failed (exit code {completed.returncode}).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox-port", type=int, default=8611)
    parser.add_argument("--dashboard-port", type=int, default=8501)
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="do not start the local sandbox (MONEYKIT_* settings point at a real MoneyKit)",
    )
    args = parser.parse_args()

    env = dict(os.environ)
    sandbox_url = f"http://localhost:{args.sandbox_port}"
    dashboard_url = f"http://localhost:{args.dashboard_port}"
    env.setdefault("LINKDESK_REDIRECT_URI", f"{dashboard_url}/oauth_return")
    # MoneyKit (here the sandbox) sends each link's webhooks to the dashboard process.
    env.setdefault("LINKDESK_WEBHOOK_URL", f"{dashboard_url}/webhooks/moneykit")
    env.setdefault("MONEYKIT_DEMO_WEBHOOK_URL", env["LINKDESK_WEBHOOK_URL"])
    sandbox: subprocess.Popen[bytes] | None = None

    if not args.no_sandbox:
        env.setdefault("MONEYKIT_BASE_URL", sandbox_url)
        env.setdefault("MONEYKIT_CONNECT_HOST", sandbox_url)
        env.setdefault("MONEYKIT_CLIENT_ID", DEFAULT_CLIENT_ID)
        env.setdefault("MONEYKIT_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        if not port_is_free(args.sandbox_port):
            raise SystemExit(
                f"Port {args.sandbox_port} is taken. Stop what uses it or pass "
                "SANDBOX_PORT=<free port> to make."
            )
        # Everything here is synthetic, so the embedded default is demo mode; the sandbox starts
        # with the demo world's seed and size, so a store built earlier still matches it.
        env.setdefault("LINKDESK_DEMO_MODE", "true")
        demo_world = ["--seed", env.get("LINKDESK_DEMO_SEED", str(DEFAULT_DEMO_SEED))]
        demo_world += ["--demo-links", env.get("LINKDESK_DEMO_LINKS", str(DEFAULT_DEMO_LINKS))]
        print(f"==> Starting the MoneyKit sandbox on {sandbox_url}", flush=True)
        sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(args.sandbox_port),
                # One line per request would drown the dashboard's own output.
                "--log-level",
                "warning",
                *demo_world,
            ],
            cwd=ROOT,
            env=env,
        )
    if not port_is_free(args.dashboard_port):
        raise SystemExit(
            f"Port {args.dashboard_port} is taken. Pass DASHBOARD_PORT=<free port> to make."
        )

    try:
        if sandbox is not None:
            wait_until_healthy(f"{sandbox_url}/_sandbox/health", sandbox, timeout=60)
        (ROOT / "var").mkdir(mode=0o700, exist_ok=True)
        secrets = ROOT / ".streamlit" / "secrets.toml"
        make_private(secrets)
        if not secrets.exists():
            write_private(secrets, (ROOT / ".streamlit" / "secrets.example.toml").read_bytes())
            print(
                "==> Created .streamlit/secrets.toml with the local demo users "
                "(admin / support / viewer; passwords in the README)",
                flush=True,
            )
        run_step("Upgrading the database", [sys.executable, "-m", "linkdesk", "migrate"], env)
        if sandbox is not None and env["LINKDESK_DEMO_MODE"].lower() in ("1", "true", "yes"):
            # Builds the world once (discovery through the API, then its history); a restart
            # keeps it and the worker reconciles it with the sandbox in the background.
            run_step(
                "Building the demo world",
                [sys.executable, "-m", "linkdesk", "demo-reset", "--unless-built"],
                env,
            )
        else:
            run_step(
                "Discovering links through the MoneyKit API",
                [sys.executable, "-m", "linkdesk", "sync"],
                env,
            )
        print(f"\nLinkdesk is running at {dashboard_url}  (Ctrl-C stops it)\n", flush=True)
        dashboard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "server.py",
                "--server.port",
                str(args.dashboard_port),
                "--server.headless",
                "true",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            return dashboard.wait()
        except KeyboardInterrupt:
            dashboard.send_signal(signal.SIGINT)
            return dashboard.wait(timeout=10)
    finally:
        if sandbox is not None and sandbox.poll() is None:
            sandbox.terminate()
            try:
                sandbox.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sandbox.kill()


if __name__ == "__main__":
    sys.exit(main())
