"""Explicit restarts: whose state a state directory holds, and what each sink already wrote.

A state directory remembers the inputs its state was made from (:class:`RunIdentity`: the
``--out`` file, the ``--accounts`` seed, the ``--replay`` file and the bracket files, each seed
by its content). A run given other inputs never silently continues from it:
:func:`decide_start` either resumes because the user asked (``--resume``), starts over because
the user asked (``--fresh``), or refuses with one line naming the directory and both choices.

After the journal is re-applied, each durable sink is compared with the events the state says
were emitted (:func:`sink_resume`). A sink's mark is its own last written alert (the last alert
line of the JSON Lines file, the last alert in the MQTT outbox), so a mark always describes the
file it came from. If that alert is among the re-emitted ones, the sink receives only those after
it; if it is the last alert before the snapshot, it receives them all; anything else means the
sink does not hold what this state wrote (another file, a truncated one), which is refused like
a change of inputs unless ``--resume`` says to go on.

Pure: the drivers read the files and pass what they found in
(:func:`liqmon.persistence.run_identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monitor.events import AlertEvent, EngineEvent

StartChoice = Literal["auto", "fresh", "resume"]


Seen = tuple[str, str]
"""A file as a run saw it: its absolute path and a digest of its content (``""``: not read)."""


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """The inputs a run's state is made from (``None``: not given)."""

    out: Seen | None = None
    accounts: Seen | None = None
    replay: Seen | None = None
    brackets: tuple[Seen, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "accounts": self.accounts,
            "replay": self.replay,
            "brackets": list(self.brackets),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunIdentity:
        def seen(value: Any) -> Seen | None:
            return None if value is None else (str(value[0]), str(value[1]))

        return cls(
            out=seen(data.get("out")),
            accounts=seen(data.get("accounts")),
            replay=seen(data.get("replay")),
            brackets=tuple((str(p), str(d)) for p, d in data.get("brackets", ())),
        )

    def differences(self, new: RunIdentity) -> list[str]:
        """What changed, for people: ``--out a.jsonl, now b.jsonl``."""
        changes = []
        for flag, was, now in (
            ("--out", self.out, new.out),
            ("--accounts", self.accounts, new.accounts),
            ("--replay", self.replay, new.replay),
        ):
            if was == now:
                continue
            if was is not None and now is not None and was[0] == now[0]:
                changes.append(f"{flag} {_name(now)} with other content")
            else:
                changes.append(f"{flag} {_name(was)}, now {_name(now)}")
        if self.brackets != new.brackets:
            changes.append("other --brackets files")
        return changes


def _name(seen: Seen | None) -> str:
    return "none" if seen is None else seen[0].rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class StartDecision:
    """``fresh``: discard any state and start empty; ``restore``: continue from the state;
    ``refuse``: do neither (``line`` says why and what to do)."""

    action: Literal["fresh", "restore", "refuse"]
    line: str
    resumed: bool = False
    """Restoring state left by other inputs, because ``--resume`` asked for it."""


def decide_start(
    directory: str,
    stored: RunIdentity | None,
    current: RunIdentity,
    *,
    has_state: bool,
    choice: StartChoice = "auto",
) -> StartDecision:
    """What to do with the state in ``directory`` (see the module docstring)."""
    where = directory
    if not has_state:
        return StartDecision("fresh", f"no state in {where}: starting fresh")
    if choice == "fresh":
        return StartDecision("fresh", f"--fresh: the state in {where} is discarded")
    if stored == current:
        return StartDecision("restore", f"restoring the state in {where}")
    changes = (
        ["inputs this version does not record"] if stored is None else stored.differences(current)
    )
    what = "; ".join(changes) or "other inputs"
    if choice == "resume":
        return StartDecision(
            "restore",
            f"--resume: continuing from the state in {where}, left by a run with {what}",
            resumed=True,
        )
    return StartDecision(
        "refuse",
        f"the state directory {where} was left by a run with different inputs ({what}); "
        "run again with --resume to continue from that state, or --fresh to start over",
    )


@dataclass(frozen=True, slots=True)
class SinkResume:
    """Where a durable sink picks up: it is given the re-emitted events after ``skip_through``
    (a sequence number; -1 gives it all). ``consistent`` is false when the sink does not hold
    what the state says was emitted (``detail`` says how)."""

    skip_through: int
    consistent: bool
    detail: str = ""


def sink_resume(
    name: str,
    last_written_id: str | None,
    snapshot_last: tuple[int, str] | None,
    replayed: Sequence[EngineEvent],
) -> SinkResume:
    """Compare a sink's last written alert with the state's (see the module docstring).

    ``snapshot_last``: ``(seq, id)`` of the last alert emitted before the snapshot the state was
    restored from (``None``: none, or no snapshot); ``replayed``: the events re-applying the
    journal produced, in order.
    """
    alerts = [(e.seq, e.id) for e in replayed if isinstance(e, AlertEvent)]
    last_seq = alerts[-1][0] if alerts else (snapshot_last[0] if snapshot_last else -1)
    if last_written_id is not None:
        for seq, event_id in reversed(alerts):
            if event_id == last_written_id:
                return SinkResume(seq, True)
        if snapshot_last is not None and last_written_id == snapshot_last[1]:
            return SinkResume(snapshot_last[0], True)
        return SinkResume(
            last_seq,
            False,
            f"{name} ends with event {last_written_id}, which this state never emitted",
        )
    if snapshot_last is None:
        return SinkResume(-1, True)  # nothing was emitted before the journal began
    return SinkResume(
        last_seq,
        False,
        f"{name} holds none of the {snapshot_last[0] + 1:,} events this state emitted",
    )
