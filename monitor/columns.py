"""Growable tables of typed columns: numpy arrays for batch work, memoryviews for one row.

A table is a set of equally long numpy arrays (its columns) with a capacity that doubles when
full. Batch code reads the arrays (``table.<name>``, sliced to ``table.size``); the scalar path
reads and writes single cells through memoryviews of the same buffers (``table.v_<name>``),
which hand out plain Python ints and floats about three times faster than numpy indexing
(28 ns against 72 ns measured here), so one entity can be valued without touching numpy.

Rows are recycled: :meth:`Table.free` puts a row on a free list and :meth:`Table.allocate`
takes it again before growing, so a long run that opens and closes positions keeps a table
of the size of its open rows.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np


class Cells(Protocol):
    """A memoryview of a column as the scalar path uses it: one cell read or written at a time
    (a float column hands out floats, an integer column ints)."""

    def __getitem__(self, index: int) -> Any: ...

    def __setitem__(self, index: int, value: Any) -> None: ...


INITIAL_CAPACITY = 256


def cells(array: np.ndarray) -> Cells:
    """A memoryview of a 1-D array, for one-cell reads and writes."""
    view: Cells = memoryview(array)  # type: ignore[arg-type]  # numpy arrays are buffers
    return view


class Table:
    """Columns named by :attr:`COLUMNS` (``name -> (dtype, fill value)``); see the module
    docstring. Subclasses declare their columns and get ``<name>`` (numpy) and ``v_<name>``
    (memoryview) attributes for each."""

    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {}

    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self.size = 0
        """Rows in use or on the free list: every row index is below it."""
        self.capacity = 0
        self._free: list[int] = []
        self._grow(max(capacity, 16))

    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows. The room beyond the used rows is left unwritten (the
        operating system gives it memory only once rows are allocated there), and columns are
        moved one at a time, so growing costs at most one column twice over."""
        for name, (dtype, _) in self.COLUMNS.items():
            fresh = np.empty(capacity, dtype=dtype)
            if self.capacity:
                fresh[: self.size] = getattr(self, name)[: self.size]
            setattr(self, name, fresh)
            setattr(self, "v_" + name, cells(fresh))
        self.capacity = capacity

    def allocate(self) -> int:
        """A row for new data (its :attr:`RESET` cells hold the fill values; a row never used
        before holds them in every column)."""
        if self._free:
            return self._free.pop()
        if self.size == self.capacity:
            self._grow(self.capacity * 2)
        row = self.size
        self.size += 1
        for name, (_, fill) in self.COLUMNS.items():
            getattr(self, "v_" + name)[row] = fill
        return row

    def allocate_many(self, count: int) -> np.ndarray:
        """``count`` rows, the very rows ``count`` calls of :meth:`allocate` would give, in
        that order (the free list first), so that a bulk load lays the book out exactly as
        applying the same records one by one."""
        reused = [self._free.pop() for _ in range(min(count, len(self._free)))]
        fresh = count - len(reused)
        needed = self.size + fresh
        if needed > self.capacity:
            capacity = self.capacity
            while capacity < needed:
                capacity *= 2
            self._grow(capacity)
        rows = np.concatenate(
            [np.array(reused, dtype=np.int64), np.arange(self.size, needed, dtype=np.int64)]
        )
        for name, (_, fill) in self.COLUMNS.items():
            getattr(self, name)[self.size : needed] = fill
        self.size = needed
        return rows

    RESET: ClassVar[tuple[str, ...] | None] = None
    """The columns :meth:`free` resets (``None``: all). The others are stale in a free row and
    written afresh by whoever allocates it."""

    def free(self, row: int) -> None:
        """Give ``row`` back: its cells (those of :attr:`RESET`) are reset to the fill values."""
        columns = self.COLUMNS
        for name in self.RESET if self.RESET is not None else columns:
            getattr(self, "v_" + name)[row] = columns[name][1]
        self._free.append(row)

    @property
    def live(self) -> int:
        """Rows in use."""
        return self.size - len(self._free)

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.COLUMNS)

    # -- snapshots -----------------------------------------------------------------------------

    DERIVED: ClassVar[frozenset[str]] = frozenset()
    """Columns recomputed on restore, left out of snapshots."""

    def export(self, prefix: str) -> dict[str, np.ndarray]:
        """Copies of the used part of every column but the derived ones (and the free list),
        keyed by ``prefix + name``."""
        out = {
            prefix + name: getattr(self, name)[: self.size].copy()
            for name in self.COLUMNS
            if name not in self.DERIVED
        }
        out[prefix + "_free"] = np.array(self._free, dtype=np.int64)
        return out

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        """Replace the contents with what :meth:`export` gave (derived columns hold their
        fill values until recomputed)."""
        size = len(arrays[prefix + next(iter(self.COLUMNS))])
        capacity = INITIAL_CAPACITY
        while capacity < size:
            capacity *= 2
        self.size = 0
        self.capacity = 0
        self._grow(capacity)
        for name, (_, fill) in self.COLUMNS.items():
            column = getattr(self, name)
            if name in self.DERIVED:
                column[:size] = fill
            else:
                column[:size] = arrays[prefix + name]
        self.size = size
        self._free = [int(r) for r in arrays[prefix + "_free"]]
