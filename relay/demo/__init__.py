"""The built-in fake claude.ai upstream used by `relay --demo`, the tests and the benchmark."""

from .behavior import Behavior, org_for
from .fake_claude import FakeClaude

# Demo cookies: well-formed, obviously fake, accepted only by the fake upstream.
DEMO_SESSIONS = ",".join(f"sk-ant-sid01-demo{'x' * 90}-demo{n:02d}AA" for n in range(1, 4))

__all__ = ["DEMO_SESSIONS", "Behavior", "FakeClaude", "org_for"]
