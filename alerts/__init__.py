"""Where events go: a small sink protocol and its implementations."""

from alerts.sink import EventSink, MemorySink

__all__ = ["EventSink", "MemorySink"]
