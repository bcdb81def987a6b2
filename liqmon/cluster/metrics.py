"""The metrics of a cluster instance (docs/deployment.md#operating-it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from liqmon.ops import Metrics


class ClusterMetrics:
    """Ownership, lag, takeovers, the relay and the snapshots, on the instance's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.owned = Gauge(
            "liqmon_cluster_partition_owned",
            "1 while this instance owns the partition",
            ["partition"],
            registry=r,
        )
        self.lag = Gauge(
            "liqmon_cluster_lag_messages",
            "Messages of the partition's log not yet applied by its owner",
            ["partition"],
            registry=r,
        )
        self.applied_seq = Gauge(
            "liqmon_cluster_applied_sequence",
            "The stream sequence of the last message the owner applied",
            ["partition"],
            registry=r,
        )
        self.acquisitions = Counter(
            "liqmon_cluster_acquisitions",
            "Partitions this instance took (a standby taking a dead owner's among them)",
            ["partition"],
            registry=r,
        )
        self.losses = Counter(
            "liqmon_cluster_losses",
            "Partitions this instance gave up, by reason (refused, overdue, stopping)",
            ["reason"],
            registry=r,
        )
        self.relayed = Counter(
            "liqmon_cluster_relayed_frames",
            "Venue frames stored in the partitions' logs, by outcome (new, already there)",
            ["outcome"],
            registry=r,
        )
        self.relay_dropped = Counter(
            "liqmon_cluster_relay_dropped_frames",
            "Venue frames dropped before relaying (the relay queue was full)",
            registry=r,
        )
        self.snapshots = Counter(
            "liqmon_cluster_snapshots", "Partition snapshots saved", ["partition"], registry=r
        )
