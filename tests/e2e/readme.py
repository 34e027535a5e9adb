"""The README's walkthroughs, read from the README itself (never copied into the tests).

A walkthrough is a fenced ``sh`` block between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
Each command is one step (a heredoc stays with the command that opens it); a comment line
``# → 201 ...`` just above a command says which HTTP status that command prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_EXPECT = re.compile(r"^#\s*→\s*(?P<status>\d{3})\b")
_HEREDOC = re.compile(r"<<-?\s*'?\"?(?P<tag>[A-Za-z_]+)'?\"?")


@dataclass(frozen=True)
class Step:
    command: str
    expected_status: int | None


def walkthrough(name: str = "walkthrough", readme: Path = README) -> list[Step]:
    marker = re.escape(name)
    block = re.compile(
        rf"<!-- {marker}:start -->\s*```sh\n(?P<body>.*?)```\s*<!-- {marker}:end -->", re.S
    )
    match = block.search(readme.read_text())
    if match is None:
        raise AssertionError(f"README.md has no {name!r} block")
    steps: list[Step] = []
    expected: int | None = None
    lines = iter(match["body"].splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if found := _EXPECT.match(stripped):
                expected = int(found["status"])
            continue
        command = [line]
        if heredoc := _HEREDOC.search(line):
            for body_line in lines:
                command.append(body_line)
                if body_line.strip() == heredoc["tag"]:
                    break
        steps.append(Step(command="\n".join(command), expected_status=expected))
        expected = None
    return steps
