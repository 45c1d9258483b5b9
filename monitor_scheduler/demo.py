"""The demo users that `monitor-scheduler demo` and `web --embedded` seed (one rule for both:
create those that do not exist yet, so a restart keeps what the demo changed)."""

from __future__ import annotations

DEMO_USERS: tuple[tuple[str, int], ...] = (("demo-alice", 1), ("demo-bob", 2), ("demo-carol", 5))
