"""The trigger index: per symbol, which rows a new mark can affect.

Every row carries its entity's *trigger band* on the row's symbol (``Rows.lo``/``Rows.hi``, see
:mod:`monitor.bands`): the marks between which the entity's state cannot change. Per symbol the
index keeps the band edges in two binary heaps over arrays, lower edges in a max-heap and upper
edges in a min-heap, so that a mark ``P`` leaves exactly the bands whose entries are at the tops:
``lo > P`` or ``hi < P``.

The tops are copied into the symbol's *envelope* (``Symbols.env_lo``/``env_hi``): a tick inside
it crosses nothing and costs two comparisons, however many rows the symbol has; a tick outside
pops the crossed entries, ``O(k log n)`` for ``k`` crossings.

Entries are never removed in place. An entry is live while its row is open and still carries
that edge; replaced bands leave stale entries behind, which are dropped when they surface, or
all at once when the heap has grown to twice its live size (then it is rebuilt from its live
entries by one sort: a sorted array is a heap).
"""

from __future__ import annotations

import numpy as np

from monitor.book import INF, NONE, Book
from monitor.columns import cells

COMPACT_SLACK = 64


class EdgeHeap:
    """A binary min-heap of ``(key, row)`` pairs in two numpy arrays."""

    __slots__ = ("_keys", "_rows", "_vk", "_vr", "size")

    def __init__(self, capacity: int = 16) -> None:
        self._keys = np.empty(capacity)
        self._rows = np.empty(capacity, dtype=np.int32)
        self._vk = cells(self._keys)
        self._vr = cells(self._rows)
        self.size = 0

    def top(self) -> float:
        """The smallest key (``inf`` when empty)."""
        return self._vk[0] if self.size else INF

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._keys):
            return
        capacity = max(needed, 2 * len(self._keys))
        keys = np.empty(capacity)
        rows = np.empty(capacity, dtype=np.int32)
        keys[: self.size] = self._keys[: self.size]
        rows[: self.size] = self._rows[: self.size]
        self._keys, self._rows = keys, rows
        self._vk, self._vr = cells(keys), cells(rows)

    def push(self, key: float, row: int) -> None:
        if self.size == len(self._keys):
            self._reserve(self.size + 1)
        keys, rows = self._vk, self._vr
        i = self.size
        self.size += 1
        while i:
            parent = (i - 1) >> 1
            if keys[parent] <= key:
                break
            keys[i] = keys[parent]
            rows[i] = rows[parent]
            i = parent
        keys[i] = key
        rows[i] = row

    def pop(self) -> tuple[float, int]:
        keys, rows = self._vk, self._vr
        key, row = keys[0], rows[0]
        self.size -= 1
        size = self.size
        if size:
            last_key, last_row = keys[size], rows[size]
            i = 0
            while True:
                child = 2 * i + 1
                if child >= size:
                    break
                right = child + 1
                if right < size and keys[right] < keys[child]:
                    child = right
                if keys[child] >= last_key:
                    break
                keys[i] = keys[child]
                rows[i] = rows[child]
                i = child
            keys[i] = last_key
            rows[i] = last_row
        return key, row

    def push_many(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Add many entries: pushed one by one when few, else appended and re-sorted."""
        count = len(keys)
        if count <= 8 or count * 8 < self.size:
            for key, row in zip(keys.tolist(), rows.tolist(), strict=True):
                self.push(key, row)
            return
        self._reserve(self.size + count)
        self._keys[self.size : self.size + count] = keys
        self._rows[self.size : self.size + count] = rows
        self.size += count
        self._sort()

    def _sort(self) -> None:
        order = np.argsort(self._keys[: self.size], kind="stable")
        self._keys[: self.size] = self._keys[: self.size][order]
        self._rows[: self.size] = self._rows[: self.size][order]

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        return self._keys[: self.size], self._rows[: self.size]

    def replace(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Hold exactly these entries (sorted here)."""
        self.size = 0
        self._reserve(len(keys))
        self._keys[: len(keys)] = keys
        self._rows[: len(keys)] = rows
        self.size = len(keys)
        self._sort()


class Triggers:
    """The index of every symbol (see the module docstring)."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.above: list[EdgeHeap] = []  # keys: hi
        self.below: list[EdgeHeap] = []  # keys: -lo
        self.holders: list[int] = []  # open rows per symbol (for compaction)

    def ensure(self, sid: int) -> None:
        while len(self.above) <= sid:
            self.above.append(EdgeHeap())
            self.below.append(EdgeHeap())
            self.holders.append(0)

    def refresh_envelope(self, sid: int) -> None:
        """The envelope from the heaps' tops (undoing a pin)."""
        self._envelope(sid)

    def _envelope(self, sid: int) -> None:
        symbols = self.book.symbols
        symbols.v_env_hi[sid] = self.above[sid].top()
        below = self.below[sid]
        symbols.v_env_lo[sid] = -below.top() if below.size else 0.0

    def set_band(self, row: int, lo: float, hi: float) -> None:
        """Give ``row`` the band ``[lo, hi]`` on its symbol and index it (``lo = 0`` and
        ``hi = inf`` are edges no mark can cross and are not stored)."""
        rows = self.book.rows
        rows.v_lo[row] = lo
        rows.v_hi[row] = hi
        sid = rows.v_symbol[row]
        symbols = self.book.symbols
        if hi != INF:
            above = self.above[sid]
            above.push(hi, row)
            if hi < symbols.v_env_hi[sid]:
                symbols.v_env_hi[sid] = hi
            if above.size > 2 * self.holders[sid] + COMPACT_SLACK:
                self.compact(sid)
        if lo > 0.0:
            below = self.below[sid]
            below.push(-lo, row)
            if lo > symbols.v_env_lo[sid]:
                symbols.v_env_lo[sid] = lo
            if below.size > 2 * self.holders[sid] + COMPACT_SLACK:
                self.compact(sid)

    def set_bands(self, rows_idx: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """:meth:`set_band` for many rows at once."""
        if not len(rows_idx):
            return
        rows = self.book.rows
        rows.lo[rows_idx] = lo
        rows.hi[rows_idx] = hi
        sid = rows.symbol[rows_idx]
        order = np.argsort(sid, kind="stable")
        sorted_sid = sid[order]
        starts = np.flatnonzero(np.r_[True, sorted_sid[1:] != sorted_sid[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            picked = order[start:end]
            s = int(sorted_sid[start])
            r, l_, h = rows_idx[picked], lo[picked], hi[picked]
            up = h != INF
            if up.any():
                self.above[s].push_many(h[up], r[up])
            down = l_ > 0.0
            if down.any():
                self.below[s].push_many(-l_[down], r[down])
            self._compact_if_needed(s)
            self._envelope(s)

    def clear_band(self, row: int) -> None:
        """The row's band no longer holds (its stale entries are dropped when met)."""
        rows = self.book.rows
        rows.v_lo[row] = 0.0
        rows.v_hi[row] = INF

    def crossed(self, sid: int, price: float) -> list[int]:
        """Pop and return the rows whose live band ``price`` leaves (possibly repeated)."""
        rows = self.book.rows
        hi_of, lo_of, sign, symbol = rows.v_hi, rows.v_lo, rows.v_sign, rows.v_symbol
        out: list[int] = []
        above = self.above[sid]
        while above.size and above._vk[0] < price:
            key, row = above.pop()
            if sign[row] and hi_of[row] == key and symbol[row] == sid:
                out.append(row)
        below = self.below[sid]
        while below.size and -below._vk[0] > price:
            key, row = below.pop()
            if sign[row] and lo_of[row] == -key and symbol[row] == sid:
                out.append(row)
        self._envelope(sid)
        return out

    def _compact_if_needed(self, sid: int) -> None:
        live = self.holders[sid]
        for heap, band, sign_of in ((self.above[sid], "hi", 1.0), (self.below[sid], "lo", -1.0)):
            if heap.size <= 2 * live + COMPACT_SLACK:
                continue
            keys, rows_idx = heap.entries()
            rows = self.book.rows
            current = getattr(rows, band)[rows_idx] * sign_of
            keep = (rows.sign[rows_idx] != 0) & (current == keys) & (rows.symbol[rows_idx] == sid)
            keys, rows_idx = keys[keep], rows_idx[keep]
            _, first = np.unique(rows_idx, return_index=True)
            heap.replace(keys[first].copy(), rows_idx[first].copy())

    def compact(self, sid: int) -> None:
        """Drop stale entries of a symbol whose heaps outgrew its open rows."""
        self._compact_if_needed(sid)
        self._envelope(sid)

    def row_opened(self, sid: int) -> None:
        self.ensure(sid)
        self.holders[sid] += 1

    def row_closed(self, sid: int) -> None:
        self.holders[sid] -= 1

    def pinned(self, sid: int) -> None:
        """Nothing is indexed any more on this symbol: forget every entry."""
        self.above[sid] = EdgeHeap()
        self.below[sid] = EdgeHeap()
        symbols = self.book.symbols
        symbols.v_env_lo[sid] = 0.0
        symbols.v_env_hi[sid] = INF


class CollateralTriggers:
    """The bands of pools on collateral prices: per asset, the same two heaps as a symbol's,
    over pool entities; an entry is live while the pool still holds that band."""

    def __init__(self) -> None:
        self.above: dict[int, EdgeHeap] = {}
        self.below: dict[int, EdgeHeap] = {}
        self.bands: dict[tuple[int, int], tuple[float, float]] = {}  # (asset, pool) -> band
        self.assets_of: dict[int, list[int]] = {}  # pool -> the assets it has bands on

    def set_bands(self, pool: int, bands: list[tuple[int, float, float]]) -> None:
        self.clear(pool)
        for asset, lo, hi in bands:
            self.bands[(asset, pool)] = (lo, hi)
            if hi != INF:
                self.above.setdefault(asset, EdgeHeap()).push(hi, pool)
            if lo > 0.0:
                self.below.setdefault(asset, EdgeHeap()).push(-lo, pool)
        self.assets_of[pool] = [asset for asset, _, _ in bands]

    def clear(self, pool: int) -> None:
        for asset in self.assets_of.pop(pool, ()):
            self.bands.pop((asset, pool), None)

    def crossed(self, asset: int, price: float) -> list[int]:
        out: list[int] = []
        bands = self.bands
        above = self.above.get(asset)
        while above is not None and above.size and above.top() < price:
            key, pool = above.pop()
            band = bands.get((asset, pool))
            if band is not None and band[1] == key and pool not in out:
                out.append(pool)
        below = self.below.get(asset)
        while below is not None and below.size and -below.top() > price:
            key, pool = below.pop()
            band = bands.get((asset, pool))
            if band is not None and band[0] == -key and pool not in out:
                out.append(pool)
        for heap in (above, below):
            if heap is not None and heap.size > 2 * len(bands) + COMPACT_SLACK:
                self._compact(asset)
        return out

    def _compact(self, asset: int) -> None:
        for heap, side in ((self.above.get(asset), 1), (self.below.get(asset), 0)):
            if heap is None:
                continue
            keys, pools = heap.entries()
            keep = [
                (k, p)
                for k, p in zip(keys.tolist(), pools.tolist(), strict=True)
                if (band := self.bands.get((asset, p))) is not None
                and (band[1] == k if side else band[0] == -k)
            ]
            heap.replace(
                np.array([k for k, _ in keep]), np.array([p for _, p in keep], dtype=np.int32)
            )


__all__ = ["NONE", "CollateralTriggers", "EdgeHeap", "Triggers"]
