"""Feed health: which symbols stopped receiving marks, and when they came back. Pure.

A symbol is **stale** once no mark arrived for ``stale_after = multiple × expected_interval``
(at or beyond the limit, measured on receive times). :class:`FeedHealth` holds no clock: the
caller says when each mark was received (:meth:`FeedHealth.observe`) and what time it is now
(:meth:`FeedHealth.check`), so staleness is tested with plain numbers and behaves the same in a
replay.

* :meth:`~FeedHealth.check` returns one :class:`FeedStalled` per symbol that just went stale
  (once per stale episode, however often it is called);
* :meth:`~FeedHealth.observe` of a stale symbol returns a :class:`FeedRecovered`.

A stall that :meth:`~FeedHealth.check` never saw (a gap that closed between two checks) is
not reported, so events always come in pairs. Symbols listed with :meth:`~FeedHealth.watch`
that never receive a mark go stale ``stale_after`` after they were listed.

While a symbol is stale, :meth:`~FeedHealth.status` says when its last mark arrived, what it
was and how old it is: the price and age at which its entities were last valued.

Times: ``*_ns`` are local receive-clock nanoseconds (``time.time_ns()`` of the live feed, or a
capture's receive times); an event's ``ts`` is milliseconds on the same clock: when the symbol
went stale (its last mark plus the limit), or when the mark that ended the silence arrived. They
are not exchange times.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from monitor.errors import ConfigError

_NS_PER_MS = 1_000_000


def _event_id(*parts: object) -> str:
    """Stable: the same facts give the same id (a hash of them)."""
    text = "|".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // _NS_PER_MS


@dataclass(frozen=True, slots=True)
class FeedStalled:
    """No mark of ``symbol`` arrived for ``stale_ns`` (at least ``stale_after_ns``).

    ``since_ns`` is the last mark's receive time (``last_mark_ns``), or when the symbol was
    first watched if no mark ever came (``last_mark_ns`` is then ``None``).
    """

    id: str
    ts: int
    venue: str
    symbol: str
    since_ns: int
    last_mark_ns: int | None
    last_mark: float | None
    stale_ns: int
    stale_after_ns: int

    kind = "feed_stale"

    def to_payload(self) -> dict[str, Any]:
        """The JSON form: ``event``, ``id``, ``ts`` and the facts, times in ms."""
        return {
            "event": self.kind,
            "id": self.id,
            "ts": self.ts,
            "venue": self.venue,
            "symbol": self.symbol,
            "since_ts": _ms(self.since_ns),
            "last_mark_ts": _ms(self.last_mark_ns),
            "last_mark": self.last_mark,
            "stale_ms": self.stale_ns // _NS_PER_MS,
            "stale_after_ms": self.stale_after_ns // _NS_PER_MS,
        }


@dataclass(frozen=True, slots=True)
class FeedRecovered:
    """Marks of ``symbol`` resumed at ``recovered_ns`` after a gap of ``stale_ns`` since
    ``since_ns`` (the last mark before the gap, or when watching began)."""

    id: str
    ts: int
    venue: str
    symbol: str
    since_ns: int
    recovered_ns: int
    stale_ns: int
    mark: float | None

    kind = "feed_recovered"

    def to_payload(self) -> dict[str, Any]:
        """The JSON form: ``event``, ``id``, ``ts`` and the facts, times in ms."""
        return {
            "event": self.kind,
            "id": self.id,
            "ts": self.ts,
            "venue": self.venue,
            "symbol": self.symbol,
            "since_ts": _ms(self.since_ns),
            "recovered_ts": _ms(self.recovered_ns),
            "stale_ms": self.stale_ns // _NS_PER_MS,
            "mark": self.mark,
        }


FeedEvent = FeedStalled | FeedRecovered


@dataclass(frozen=True, slots=True)
class SymbolHealth:
    """One symbol at ``now``: its last mark (``None`` if none yet), that mark's age, and
    whether it is stale (``stale_since_ns``: start of the current stale episode)."""

    symbol: str
    last_mark_ns: int | None
    last_mark: float | None
    age_ns: int
    stale: bool
    stale_since_ns: int | None


@dataclass(slots=True)
class _Track:
    since_ns: int  # last mark's receive time, or when watching began
    last_mark_ns: int | None = None
    last_mark: float | None = None
    stale: bool = False


class FeedHealth:
    """Per-symbol staleness of one venue's marks (see the module docstring)."""

    __slots__ = ("_tracks", "stale_after_ns", "venue")

    def __init__(self, venue: str, *, expected_interval_s: float, multiple: float = 5.0) -> None:
        stale_after = multiple * expected_interval_s
        if not (math.isfinite(stale_after) and expected_interval_s > 0 and multiple >= 1):
            raise ConfigError(
                "feed health: expected_interval_s must be > 0 and multiple >= 1, got "
                f"{expected_interval_s!r} and {multiple!r}"
            )
        self.venue = venue
        self.stale_after_ns = round(stale_after * 1e9)
        self._tracks: dict[str, _Track] = {}

    def watch(self, symbols: Iterable[str], now_ns: int) -> None:
        """Expect marks for ``symbols`` from ``now_ns`` on (already known symbols are kept)."""
        for symbol in symbols:
            if symbol not in self._tracks:
                self._tracks[symbol] = _Track(since_ns=now_ns)

    def observe(
        self, symbol: str, receive_ts_ns: int, mark: float | None = None
    ) -> FeedRecovered | None:
        """A mark of ``symbol`` arrived at ``receive_ts_ns``; a :class:`FeedRecovered` if the
        symbol was stale. Receive times that go backwards do not move the last mark back."""
        track = self._tracks.get(symbol)
        if track is None:
            self._tracks[symbol] = _Track(receive_ts_ns, receive_ts_ns, mark)
            return None
        if track.last_mark_ns is not None and receive_ts_ns < track.last_mark_ns:
            return None
        recovered = None
        if track.stale:
            stale_ns = receive_ts_ns - track.since_ns
            recovered = FeedRecovered(
                id=_event_id("feed_recovered", self.venue, symbol, track.since_ns, receive_ts_ns),
                ts=receive_ts_ns // _NS_PER_MS,
                venue=self.venue,
                symbol=symbol,
                since_ns=track.since_ns,
                recovered_ns=receive_ts_ns,
                stale_ns=stale_ns,
                mark=mark,
            )
            track.stale = False
        track.since_ns = track.last_mark_ns = receive_ts_ns
        track.last_mark = mark
        return recovered

    def check(self, now_ns: int) -> list[FeedStalled]:
        """The symbols that went stale by ``now_ns`` and were not reported yet, in the order
        they went stale (then by symbol). Each is stamped with the moment it went stale
        (``since + stale_after``), not with ``now_ns``: however late the check, the event is
        the same, so a live run and a replay of its frames agree."""
        limit = self.stale_after_ns
        due = sorted(
            (track.since_ns, symbol)
            for symbol, track in self._tracks.items()
            if not track.stale and now_ns - track.since_ns >= limit
        )
        stalled: list[FeedStalled] = []
        for since_ns, symbol in due:
            track = self._tracks[symbol]
            track.stale = True
            stalled.append(
                FeedStalled(
                    id=_event_id("feed_stale", self.venue, symbol, since_ns),
                    ts=(since_ns + limit) // _NS_PER_MS,
                    venue=self.venue,
                    symbol=symbol,
                    since_ns=since_ns,
                    last_mark_ns=track.last_mark_ns,
                    last_mark=track.last_mark,
                    stale_ns=limit,
                    stale_after_ns=limit,
                )
            )
        return stalled

    def status(self, now_ns: int) -> list[SymbolHealth]:
        """Every known symbol at ``now_ns``, by symbol (``stale`` as last :meth:`check`ed)."""
        return [
            SymbolHealth(
                symbol=symbol,
                last_mark_ns=track.last_mark_ns,
                last_mark=track.last_mark,
                age_ns=now_ns - track.since_ns,
                stale=track.stale,
                stale_since_ns=track.since_ns if track.stale else None,
            )
            for symbol, track in sorted(self._tracks.items())
        ]

    def stale_symbols(self) -> list[str]:
        """The symbols currently reported stale, sorted."""
        return sorted(symbol for symbol, track in self._tracks.items() if track.stale)
