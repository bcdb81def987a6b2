"""Sharded, highly available ``liqmon run`` on NATS JetStream (docs/deployment.md).

* :mod:`.subjects`: the subjects, the partition of an account, the relay's message ids (pure);
* :mod:`.lease`: the rules of partition ownership (pure, time passed in);
* :mod:`.shard_core`: one partition's log applied to a runtime, and its snapshot (pure);
* :mod:`.nats_io`: the JetStream adapters (stream, leases bucket, snapshots, log reader);
* :mod:`.snapshots`: when a partition's snapshot is saved, which one a new owner loads;
* :mod:`.metrics`: what an instance exports;
* :mod:`.relay`: the venue's frames stored in every partition's log;
* :mod:`.seeds`: what every owner starts a partition from;
* :mod:`.service`: the wiring: one task group per instance.
"""
