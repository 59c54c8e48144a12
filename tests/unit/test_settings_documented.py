"""Every setting is documented in the README, with the description the code carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from linkdesk.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("env", "description"), Settings.fields_documentation())
def test_setting_is_in_the_readme_table(env: str, description: str) -> None:
    assert description, f"{env} has no description"
    row = next((line for line in README.splitlines() if line.startswith(f"| `{env}` |")), None)
    assert row is not None, f"{env} is missing from the README (run scripts/settings_table.py)"
    assert description.replace("|", "\\|") in row
