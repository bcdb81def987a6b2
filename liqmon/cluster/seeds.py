"""What every owner of a partition starts from before its log: the seeds."""

from __future__ import annotations

from feeds.brackets import load_brackets
from feeds.normalized import parse_line
from liqmon.settings import ServiceSettings
from monitor.errors import ConfigError
from monitor.records import AccountUpdateRecord, ContractRecord, Record


def cluster_seeds(settings: ServiceSettings) -> list[Record]:
    """What every owner starts a partition from: the bracket files' contracts, and the
    records of ``accounts`` that are not an account's (contracts, collateral prices).
    Account records come from the log only: a seed file holding one is a configuration error."""
    seeds: list[Record] = [
        ContractRecord(contract) for path in settings.brackets
        for contract in load_brackets(path).contracts
    ]  # fmt: skip
    if settings.accounts is not None:
        with open(settings.accounts, "rb") as stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                record = parse_line(line)
                if getattr(record, "account", None) is not None or isinstance(
                    record, AccountUpdateRecord
                ):
                    raise ConfigError(
                        f"cluster: {settings.accounts} line {number} is an account record; "
                        "in a cluster account records come from the log only"
                    )
                seeds.append(record)
    return seeds
