"""The line targets a simulated run is held to (issue 5's sustained-rate targets), as the PLC sees them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # plc_sim imports pymodbus and pyserial, an optional extra
    from .plc_sim import SimulationReport

P99_TARGET_MS = 100.0  # trigger to result, at the sustained rate
RATE_SHARE = 0.95  # the PLC must have fired at this share of the asked rate for the run to count


@dataclass(frozen=True)
class TargetCheck:
    name: str
    target: str
    value: str
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_line_targets(report: SimulationReport, rate_hz: float, deadline_ms: float) -> list[TargetCheck]:
    """Every part answered exactly once with its own verdict, in time; p99 within the target."""
    failsafe = report.decisions.get("FAILSAFE", 0)
    checks = [
        TargetCheck("answered", f"{report.triggers} of {report.triggers} triggers answered, none lost",
                    f"{report.verdicts} answered, {report.lost} lost", report.lost == 0 and report.triggers > 0),
        TargetCheck("duplicated", "no result received twice", f"{report.duplicated} duplicated",
                    report.duplicated == 0 and report.unexpected == 0),
        TargetCheck("p99", f"trigger-to-result p99 <= {P99_TARGET_MS:g} ms", f"p99 {report.p99_ms:.1f} ms",
                    report.verdicts > 0 and report.p99_ms <= P99_TARGET_MS),
        TargetCheck("deadline", f"every result within the recipe's deadline ({deadline_ms:g} ms)",
                    f"max {report.max_ms:.1f} ms", report.verdicts > 0 and report.max_ms <= deadline_ms),
        TargetCheck("verdicts", "every part gets its verdict, not the fail-safe",
                    f"{failsafe} fail-safe ({report.late} at the deadline)", failsafe == 0 and report.late == 0),
    ]
    if rate_hz > 0:
        checks.append(TargetCheck("rate", f"PLC fired at >= {RATE_SHARE:.0%} of {rate_hz:g} parts/s",
                                  f"{report.achieved_rate_hz:g} parts/s",
                                  report.achieved_rate_hz >= RATE_SHARE * rate_hz or report.triggers <= 1))
    return checks
