"""Fixtures for contract tests: a real sandbox process reached over real HTTP.

* ``sandbox_url`` (session): ``http://localhost:<port>`` of a ``python -m sandbox`` started once per
  test session on a free port (always ``localhost``, never ``127.0.0.1``: the Connect UI host must
  equal the browser's origin byte for byte). Set ``LINKDESK_CONTRACT_SANDBOX_URL`` to use a sandbox
  that is already running instead; its credentials then come from ``MONEYKIT_CLIENT_ID`` /
  ``MONEYKIT_CLIENT_SECRET`` (or the sandbox defaults).
* ``sandbox_credentials`` (session): ``(client_id, client_secret)`` that sandbox accepts.
* ``reset_sandbox``: call it to restore the seeded demo state (``POST /_sandbox/reset``).
* ``contract_target`` (session): where the SDK contract suite runs. By default the sandbox above.
  Set ``MONEYKIT_CONTRACT_BASE_URL`` (e.g. ``https://api.moneykit.com``) together with
  ``MONEYKIT_CONTRACT_CLIENT_ID`` / ``MONEYKIT_CONTRACT_CLIENT_SECRET`` (sandbox keys) to run the
  same suite against the real MoneyKit; without the credentials the suite is skipped, and tests
  that need the sandbox's own controls or Connect API skip themselves (``sandbox_only``).

The process is shared by every contract test, so tests should prefer links they create themselves
for anything destructive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.sandbox_process import running_sandbox

CONTRACT_CLIENT_ID = "contract_client"
CONTRACT_CLIENT_SECRET = "contract_secret"
DEFAULT_CLIENT_ID = "linkdesk_sandbox_client"
DEFAULT_CLIENT_SECRET = "linkdesk_sandbox_secret"


@pytest.fixture(scope="session")
def sandbox_credentials() -> tuple[str, str]:
    if os.environ.get("LINKDESK_CONTRACT_SANDBOX_URL"):
        return (
            os.environ.get("MONEYKIT_CLIENT_ID") or DEFAULT_CLIENT_ID,
            os.environ.get("MONEYKIT_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET,
        )
    return CONTRACT_CLIENT_ID, CONTRACT_CLIENT_SECRET


@pytest.fixture(scope="session")
def sandbox_url(sandbox_credentials: tuple[str, str]) -> Iterator[str]:
    external = os.environ.get("LINKDESK_CONTRACT_SANDBOX_URL")
    if external:
        yield external.rstrip("/")
        return

    client_id, client_secret = sandbox_credentials
    try:
        with running_sandbox(client_id, client_secret) as url:
            yield url
    except RuntimeError as failure:
        pytest.fail(str(failure))


@pytest.fixture
def reset_sandbox(sandbox_url: str) -> Callable[[], None]:
    def reset() -> None:
        response = httpx.post(f"{sandbox_url}/_sandbox/reset", timeout=10.0)
        response.raise_for_status()

    return reset


@dataclass(frozen=True)
class ContractTarget:
    base_url: str
    client_id: str
    client_secret: str
    is_sandbox: bool


@pytest.fixture(scope="session")
def contract_target(request: pytest.FixtureRequest) -> ContractTarget:
    real_url = os.environ.get("MONEYKIT_CONTRACT_BASE_URL")
    if real_url:
        client_id = os.environ.get("MONEYKIT_CONTRACT_CLIENT_ID")
        client_secret = os.environ.get("MONEYKIT_CONTRACT_CLIENT_SECRET")
        if not (client_id and client_secret):
            pytest.skip(
                "MONEYKIT_CONTRACT_BASE_URL is set but MONEYKIT_CONTRACT_CLIENT_ID / "
                "MONEYKIT_CONTRACT_CLIENT_SECRET are not: no real MoneyKit credentials"
            )
        return ContractTarget(real_url.rstrip("/"), client_id, client_secret, is_sandbox=False)
    url: str = request.getfixturevalue("sandbox_url")
    client_id, client_secret = request.getfixturevalue("sandbox_credentials")
    return ContractTarget(url, client_id, client_secret, is_sandbox=True)


@pytest.fixture
def sandbox_only(contract_target: ContractTarget) -> str:
    """The sandbox URL; skips the test against the real MoneyKit (it needs sandbox-only parts)."""
    if not contract_target.is_sandbox:
        pytest.skip("needs the sandbox's controls or its Connect page API")
    return contract_target.base_url
