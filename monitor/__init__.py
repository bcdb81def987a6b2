"""liqmon's pure core: the margin engine (records in, events out; no I/O, no clock)."""

from monitor.config import EngineConfig
from monitor.contracts import Contract, Tier, make_contract
from monitor.engine import Engine
from monitor.errors import (
    ConfigError,
    LiqmonError,
    MalformedRecord,
    RecordRefused,
    RecordRejected,
    TickDropped,
    TierTableError,
)
from monitor.events import (
    EngineEvent,
    EntityRef,
    LiquidationTriggered,
    MarginRecovered,
    MarginWarningRaised,
    PositionView,
    to_payload,
)
from monitor.records import (
    BalanceRecord,
    ContractRecord,
    MarginRecord,
    PositionRecord,
    Record,
    TickRecord,
)

__all__ = [
    "BalanceRecord",
    "ConfigError",
    "Contract",
    "ContractRecord",
    "Engine",
    "EngineConfig",
    "EngineEvent",
    "EntityRef",
    "LiqmonError",
    "LiquidationTriggered",
    "MalformedRecord",
    "MarginRecord",
    "MarginRecovered",
    "MarginWarningRaised",
    "PositionRecord",
    "PositionView",
    "Record",
    "RecordRefused",
    "RecordRejected",
    "TickDropped",
    "TickRecord",
    "Tier",
    "TierTableError",
    "make_contract",
    "to_payload",
]
