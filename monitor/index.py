"""The trigger index: per symbol, which entities a new mark can affect.

For each symbol it keeps two heaps of band edges: the lower edges in a max-heap and the upper
edges in a min-heap. A mark ``P`` crosses exactly the entries with ``lo > P`` or ``hi < P``,
which sit at the tops of the heaps, so a tick that crosses nothing costs two comparisons, and
one that crosses ``k`` bands costs ``O(k log n)`` — independent of how many entities are far
from any threshold.

Entries are never removed in place: an entity whose bands are replaced bumps its ``version``
and old entries are discarded when they surface (or when the heap is compacted because stale
entries outnumber live ones).
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from itertools import count

from monitor.entity import Entity

_Entry = tuple[float, int, int, Entity]

_tiebreak = count()


class SymbolTriggers:
    """The band edges of every entity indexed on one symbol."""

    __slots__ = ("above", "below")

    def __init__(self) -> None:
        self.below: list[_Entry] = []  # (-lo, tiebreak, version, entity): max-heap of lo
        self.above: list[_Entry] = []  # (hi, tiebreak, version, entity): min-heap of hi

    def __len__(self) -> int:
        return len(self.below) + len(self.above)

    def add(self, entity: Entity, lo: float, hi: float) -> None:
        """Index ``entity``'s band ``[lo, hi]`` (``lo = 0`` / ``hi = inf`` are not stored)."""
        version = entity.version
        if lo > 0.0:
            heappush(self.below, (-lo, next(_tiebreak), version, entity))
        if hi != float("inf"):
            heappush(self.above, (hi, next(_tiebreak), version, entity))

    def crossed(self, price: float) -> list[Entity]:
        """Pop and return the live entities whose band ``price`` leaves."""
        out: list[Entity] = []
        above = self.above
        while above and above[0][0] < price:
            _, _, version, entity = heappop(above)
            if entity.version == version and entity.alive:
                out.append(entity)
        below = self.below
        while below and -below[0][0] > price:
            _, _, version, entity = heappop(below)
            if entity.version == version and entity.alive:
                out.append(entity)
        return out

    def compact(self) -> None:
        """Drop stale entries (entities re-indexed or gone since the entry was pushed)."""
        self.below = [e for e in self.below if e[3].version == e[2] and e[3].alive]
        self.above = [e for e in self.above if e[3].version == e[2] and e[3].alive]
        heapify(self.below)
        heapify(self.above)
