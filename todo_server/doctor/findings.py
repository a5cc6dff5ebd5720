"""One check's finding, and the statuses it can have."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_STATUS = {OK: 0, WARN: 1, FAIL: 2}
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Finding:
    """What one check found: ``status`` is ok, warn or fail; ``fix`` says what to do."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.check}: {self.detail}{fix}"


def exit_status(findings: list[Finding]) -> int:
    """0 when every finding is ok, 1 when some warn, 2 when one fails."""
    return max((EXIT_STATUS[f.status] for f in findings), default=0)


def first_line(exc: BaseException) -> str:
    """An error's message without the detail and hint lines PostgreSQL adds."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
