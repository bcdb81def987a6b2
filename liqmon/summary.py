"""What a replay did, counted, and its end-of-run report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

FIRST_LINES_KEPT = 5


@dataclass
class ReplayStats:
    """Counters of one replay. ``rejected`` counts malformed lines and records the engine refused
    to apply; ``dropped`` counts valid ticks ignored by rule (stale, unknown symbol)."""

    source: str = ""
    title: str = ""
    lines: int = 0
    records: Counter[str] = field(default_factory=Counter)
    ticks_applied: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_lines: dict[str, list[int]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    state_updates: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    failure: str | None = None
    ticks_by_source: Counter[str] = field(default_factory=Counter)
    rejected_by_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Refused input (dropped ticks aside) by ``(source, reason)``."""
    duplicates: int = 0
    """Redelivered margin records applied once (not again)."""
    journaled: int = 0
    snapshots: int = 0
    funding: dict[str, dict[str, str]] = field(default_factory=dict)
    """With funding on: per margin asset, what positions ``paid`` and ``received`` (exact
    decimal text, both >= 0); the summary JSON's ``funding`` is their net per asset (received
    minus paid: what funding booked to the wallets), ``funding_flows`` the two."""

    def reject(self, reason: str, line: int) -> None:
        self.rejected[reason] += 1
        kept = self.rejected_lines.setdefault(reason, [])
        if len(kept) < FIRST_LINES_KEPT:
            kept.append(line)

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "lines": self.lines,
            "records": dict(self.records),
            "ticks_applied": self.ticks_applied,
            "dropped": dict(self.dropped),
            "rejected": dict(self.rejected),
            "rejected_first_lines": self.rejected_lines,
            "events": dict(self.events),
            "state_updates": self.state_updates,
            "warnings": self.warnings,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed, 6),
            "failure": self.failure,
            "funding": {
                asset: float(Decimal(flows["received"]) - Decimal(flows["paid"]))
                for asset, flows in self.funding.items()
            },
            "funding_flows": self.funding,
        }


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items()))


def render(stats: ReplayStats) -> str:
    """The end-of-run summary, for humans."""
    lines = [stats.title or stats.source]
    by_type = _counts(stats.records)
    lines.append(f"  records     {stats.total_records:,}" + (f" ({by_type})" if by_type else ""))
    dropped = sum(stats.dropped.values())
    lines.append(
        f"  ticks       {stats.ticks_applied:,} applied, {dropped:,} dropped"
        + (f" ({_counts(stats.dropped)})" if dropped else "")
    )
    rejected = sum(stats.rejected.values())
    if rejected:
        lines.append(f"  rejected    {rejected:,}")
        for reason, count in sorted(stats.rejected.items()):
            first = ", ".join(str(n) for n in stats.rejected_lines.get(reason, []))
            more = " ..." if count > len(stats.rejected_lines.get(reason, [])) else ""
            lines.append(f"              {reason} {count:,}: line {first}{more}")
    else:
        lines.append("  rejected    0")
    events = sum(stats.events.values())
    lines.append(f"  events      {events:,}" + (f" ({_counts(stats.events)})" if events else ""))
    for asset, flows in sorted(stats.funding.items()):
        net = Decimal(flows["received"]) - Decimal(flows["paid"])
        lines.append(
            f"  funding     {asset}: {net:+f} net (paid {flows['paid']}, "
            f"received {flows['received']})"
        )
    lines.extend(f"  {note}" for note in stats.notes)
    lines.extend(f"  warning     {warning}" for warning in stats.warnings)
    rate = stats.lines / stats.elapsed if stats.elapsed > 0 else 0.0
    lines.append(
        f"  throughput  {stats.lines:,} lines in {stats.elapsed:.3f} s ({rate:,.0f} lines/s)"
    )
    if stats.failure:
        lines.append(f"  FAILED      {stats.failure}")
    return "\n".join(lines)
