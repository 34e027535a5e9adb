"""Login throttling per account: the policy and how one attempt changes an account's row.

State lives in the database (``models.LoginThrottle``), so every auth replica sees the same
counts; this module is the pure part, applied to a row read under a lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from auth_service.models import LoginThrottle


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Login throttling per account: ``max_failures`` attempts within ``window`` seconds lock
    the account's logins for ``lockout`` seconds, doubling with each lockout in a row up to
    ``lockout_max``; a lockout ``lockout_max`` seconds in the past is forgiven."""

    max_failures: int = 10
    window: float = 60.0
    lockout: float = 60.0
    lockout_max: float = 3600.0

    def lockout_after(self, lockouts: int) -> float:
        return float(min(self.lockout * 2 ** (lockouts - 1), self.lockout_max))


def count_attempt(row: LoginThrottle, policy: ThrottlePolicy, now: float) -> float | None:
    """Count one login attempt on ``row``: the seconds left when the account is locked (the
    attempt is refused and not counted), else ``None``. An attempt counts as a failure until
    it succeeds (a success deletes the row), so parallel guesses cannot exceed the limit."""
    if row.locked_until > now:
        return row.locked_until - now
    if now - max(row.last_attempt_at, row.locked_until) >= policy.lockout_max:
        row.lockouts = 0  # quiet for long enough: the next lockout is the shortest again
    if now - row.window_started_at >= policy.window:
        row.failures, row.window_started_at = 0, now
    row.failures += 1
    row.last_attempt_at = now
    if row.failures >= policy.max_failures:
        row.lockouts += 1
        row.locked_until = now + policy.lockout_after(row.lockouts)
        row.failures, row.window_started_at = 0, row.locked_until
    return None
