"""Print the settings as a Markdown table: ``python -m config`` (the README's reference).

Each row's description is the comment written above the field in config/__init__.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import config


def _comments() -> dict[str, str]:
    notes: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(config.Settings).splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):
            pending = []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
        elif match := re.match(r"(\w+): [\w|\[\] ]+ = .*?(?:#\s*(.*))?$", stripped):
            text = " ".join(pending) or (match.group(2) or "")
            notes[match.group(1)] = text
            pending = []
        else:
            pending = []
    return notes


def markdown() -> str:
    notes = _comments()
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(config.Settings):
        default = field.default
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `{config.ENV_PREFIX}{field.name.upper()}` | {shown} | "
                    f"{notes.get(field.name, '').replace('|', '/')} |")
    return "\n".join(rows)


BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def update_readme(path: str = "README.md") -> None:
    """Rewrite the table between the README's settings markers."""
    with open(path) as handle:
        text = handle.read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    with open(path, "w") as handle:
        handle.write(f"{head}{BEGIN}\n{markdown()}\n{END}{tail}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--readme"]:
        update_readme()
    else:
        print(markdown())
