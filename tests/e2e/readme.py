"""The README's walkthrough, read from the README itself (never copied into the tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(
    r"<!-- walkthrough:start -->\s*```sh\n(?P<body>.*?)```\s*<!-- walkthrough:end -->", re.S
)
_EXPECT = re.compile(r"^#\s*→\s*(?P<status>\d{3})\b")


@dataclass(frozen=True)
class Step:
    command: str
    expected_status: int | None


def walkthrough(readme: Path = README) -> list[Step]:
    match = _BLOCK.search(readme.read_text())
    if match is None:
        raise AssertionError("README.md has no walkthrough block")
    steps: list[Step] = []
    expected: int | None = None
    for line in match["body"].splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if found := _EXPECT.match(stripped):
                expected = int(found["status"])
            continue
        steps.append(Step(command=stripped, expected_status=expected))
        expected = None
    return steps
