#!/usr/bin/env python3
"""Prints the command a README section gives, so CI runs exactly what the README tells a new user.

usage: readme_commands.py SECTION [README]
The command is the first indented (code) line under the `## SECTION` heading. Exit 1 when there is none.
"""
import sys
from pathlib import Path


def section_command(text: str, section: str) -> str:
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].strip().lower() == section.lower()
            continue
        if inside and line.startswith("    ") and line.strip():
            return line.strip()
    raise LookupError(f"README has no command under '## {section}'")


if __name__ == "__main__":
    readme = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent.parent / "README.md"
    try:
        print(section_command(readme.read_text(), sys.argv[1]))
    except LookupError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
