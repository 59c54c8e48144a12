"""Print the README's settings table from `Settings`, so the docs follow the code.

.venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr

from linkdesk.settings import Settings


def main() -> None:
    print("| variable | default | meaning |")
    print("|---|---|---|")
    documentation = Settings.fields_documentation()
    for (env, description), info in zip(documentation, Settings.model_fields.values(), strict=True):
        default = info.default
        shown = "unset" if default is None or isinstance(default, SecretStr) else f"`{default}`"
        escaped = description.replace("|", "\\|")
        print(f"| `{env}` | {shown} | {escaped} |")


if __name__ == "__main__":
    main()
