"""What a preflight found, as plain values: one ``HostCheck`` per check, in a report.

Apart from how they were found (``checks`` judges, ``remote`` and ``run`` do the I/O), so the
command renders them, a launch refuses on them and the restart policy reads which hosts
failed, none of them running anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ALL_HOSTS = "all"  # the host column of checks about the job as a whole


@dataclass(frozen=True)
class HostCheck:
    host: str
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def failure_line(self) -> str:
        return f"{self.host}: {self.check}: {self.detail}" + (f"; fix: {self.fix}"
                                                              if self.fix else "")


@dataclass(frozen=True)
class PreflightReport:
    hosts: tuple[str, ...]
    run_dir: str
    checks: tuple[HostCheck, ...]
    shared: Mapping[str, bool | None] = field(default_factory=dict)  # run dir seen by launcher
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[HostCheck]:
        return [c for c in self.checks if not c.ok]

    def passed_hosts(self) -> list[str]:
        """Hosts none of whose own checks failed (job-level checks aside)."""
        failed = {c.host for c in self.failures}
        return [h for h in self.hosts if h not in failed]

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": list(self.hosts), "run_dir": self.run_dir,
                "passed_hosts": self.passed_hosts(), "shared": dict(self.shared),
                "checks": [c.as_json() for c in self.checks],
                "failures": [c.failure_line() for c in self.failures],
                "notes": list(self.notes), "elapsed_s": round(self.elapsed_s, 2)}

