"""The sans-I/O runtime shared by ``liqmon replay``, capture replays and ``liqmon run``.

:class:`Runtime` (:mod:`liqmon.runtime.core`) takes every input with the time passed in and
returns :class:`Effects`; :mod:`liqmon.runtime.restart` decides how a run starts from the state
it finds.
"""

from liqmon.runtime.core import Runtime, record_kind
from liqmon.runtime.effects import Effects

__all__ = ["Effects", "Runtime", "record_kind"]
