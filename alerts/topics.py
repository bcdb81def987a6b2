"""liqmon's MQTT topic tree, version 1 (documented in ``asyncapi.yaml``).

With the default prefix ``liqmon/v1``::

    liqmon/v1/status/{instance}                                 retained: online / offline
    liqmon/v1/service/{notice_kind}/{instance}                  QoS 1 service_started / _stopped
    liqmon/v1/rejects                                           QoS 1 input refused, and why
    liqmon/v1/events/{kind}/{account}/cross/{asset}             QoS 1 alert events
    liqmon/v1/events/{kind}/{account}/isolated/{symbol}/{side}
    liqmon/v1/events/{feed_kind}/{venue}/{symbol}               QoS 1 feed health events
    liqmon/v1/state/{account}/cross/{asset}                     retained: latest state
    liqmon/v1/state/{account}/isolated/{symbol}/{side}
    liqmon/v1/events/{kind}/{account}/pool/USD                  a multi-assets account's pool
    liqmon/v1/state/{account}/pool/USD
    liqmon/v1/shock/request                                     what-if requests (MQTT 5)
    liqmon/v1/shock/response/{client}                           a requester's answers

``kind`` is ``margin_warning``, ``margin_recovered`` or ``liquidation``; ``feed_kind`` is
``feed_stale`` or ``feed_recovered`` (a symbol's marks stopped / resumed). A dashboard subscribes to
``liqmon/v1/events/#`` for every alert, ``liqmon/v1/events/+/alice/#`` for one account's,
``liqmon/v1/events/liquidation/#`` for one kind, and ``liqmon/v1/state/#`` for the whole book.

A what-if shock is asked on ``shock/request`` with MQTT 5 request/response: every instance answers
for its own book on the request's Response Topic, echoing its Correlation Data. Requesters use
``shock/response/{client}`` (their own client id) by convention. ``link/sync/{client}`` is private
to one connection (:mod:`alerts.link`'s sync barrier): nothing else publishes or reads it.

Names are used as topic levels after percent-encoding the characters MQTT gives a meaning to
(``/``, ``+``, ``#``), ``%`` itself and control characters, so an account called ``a/b`` is the
single level ``a%2Fb`` and can never reach into another account's topics.
"""

from __future__ import annotations

from monitor.events import EntityRef

DEFAULT_PREFIX = "liqmon/v1"
ALERT_KINDS = ("margin_warning", "margin_recovered", "liquidation")
FEED_KINDS = ("feed_stale", "feed_recovered")


def level(name: str) -> str:
    """``name`` as one topic level (see the module docstring)."""
    if name and all(c not in "/+#%" and c >= " " and c != "\x7f" for c in name):
        return name
    return (
        "".join(f"%{ord(c):02X}" if c in "/+#%" or c < " " or c == "\x7f" else c for c in name)
        or "%00"
    )


def _entity_path(entity: EntityRef) -> str:
    if entity.scope == "cross":
        return f"{level(entity.account)}/cross/{level(entity.asset)}"
    if entity.scope == "pool":  # a multi-assets account: one pool, its numbers in USD
        return f"{level(entity.account)}/pool/{level(entity.asset)}"
    return (
        f"{level(entity.account)}/isolated/{level(entity.symbol or '')}/{level(entity.side or '')}"
    )


def event_topic(prefix: str, kind: str, entity: EntityRef) -> str:
    return f"{prefix}/events/{kind}/{_entity_path(entity)}"


def feed_event_topic(prefix: str, kind: str, venue: str, symbol: str) -> str:
    return f"{prefix}/events/{kind}/{level(venue)}/{level(symbol)}"


def state_topic(prefix: str, entity: EntityRef) -> str:
    return f"{prefix}/state/{_entity_path(entity)}"


def service_topic(prefix: str, kind: str, instance: str) -> str:
    """Where an instance's notices go (``service_started``, ``service_stopped``)."""
    return f"{prefix}/service/{kind}/{level(instance)}"


def status_topic(prefix: str, instance: str) -> str:
    return f"{prefix}/status/{level(instance)}"


def event_filter(prefix: str, *, account: str | None = None, kind: str | None = None) -> str:
    """The subscription that selects alert events, optionally of one account and/or kind."""
    kind_level = kind or "+"
    if account is None:
        return f"{prefix}/events/{kind_level}/#"
    return f"{prefix}/events/{kind_level}/{level(account)}/#"


def state_filter(prefix: str, *, account: str | None = None) -> str:
    return f"{prefix}/state/{level(account)}/#" if account else f"{prefix}/state/#"


def shock_request_topic(prefix: str) -> str:
    """Where what-if shock requests are published (every instance subscribes)."""
    return f"{prefix}/shock/request"


def shock_response_topic(prefix: str, client: str) -> str:
    """The conventional Response Topic of a requester (its own client id as one level)."""
    return f"{prefix}/shock/response/{level(client)}"
