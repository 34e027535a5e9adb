"""The README's accounts walkthrough against the local stack: one account whatever the letter
case, logout revokes the token, account deletion frees the name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.readme import walkthrough
from tests.e2e.stack import Stack, running_stack
from tests.e2e.test_local_stack import run_readme_steps


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def test_readme_accounts_walkthrough_runs_verbatim(stack: Stack, tmp_path: Path) -> None:
    printed = run_readme_steps(stack, walkthrough("accounts"), cwd=tmp_path)
    bodies = [(step.command, body) for step, body in printed if step.expected_status]
    first, taken = bodies[0][1], bodies[1][1]
    assert json.loads(first)["username"] == "carol"
    assert json.loads(taken)["code"] == "username_taken"
    revoked = next(body for command, body in bodies if "/auth/validate" in command)
    assert json.loads(revoked) == {"detail": "Token revoked", "code": "token_revoked"}
    again = json.loads(bodies[-1][1])
    assert again["username"] == "carol"
    assert again["id"] != json.loads(first)["id"]
