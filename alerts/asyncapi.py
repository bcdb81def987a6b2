"""The AsyncAPI 3 description of liqmon's MQTT interface, built from the payload models.

``asyncapi.yaml`` at the repository root is this document; regenerate it after changing a
topic or a payload model (a test fails while they differ)::

    python -m alerts.asyncapi > asyncapi.yaml
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from alerts.schema import (
    FeedRecoveredPayload,
    FeedStalePayload,
    LiquidationPayload,
    MarginRecoveredPayload,
    MarginWarningPayload,
    RejectPayload,
    ServiceStartedPayload,
    ServiceStoppedPayload,
    ShockAnswerPayload,
    ShockRefusalPayload,
    ShockRequestPayload,
    StatePayload,
    StatusPayload,
)
from alerts.topics import DEFAULT_PREFIX, shock_request_topic
from feeds.accounts import AccountConfigIn, AccountUpdateIn
from feeds.normalized import (
    AccountSnapshotIn,
    AccountUpdateRecordIn,
    AssetModeIn,
    BalanceIn,
    CollateralIn,
    ContractIn,
    MarginIn,
    PositionIn,
)

TOPIC_TREE_VERSION = "1.0.0"

_PARAMETERS = {
    "instance": "The liqmon instance (``--instance``), percent-encoded as one topic level.",
    "account": "The account, percent-encoded as one topic level (``/``, ``+``, ``#``, ``%`` and "
    "control characters become ``%XX``).",
    "asset": "The margin asset of a cross entity; ``USD`` for a multi-assets account's pool "
    "(every linear cross position and every wallet of the account, valued in USD: "
    "``docs/collateral.md``).",
    "symbol": "The symbol of an isolated position.",
    "side": "The slot of an isolated position: ``both`` (one-way), ``long`` or ``short`` (hedge).",
    "venue": "The feed's venue: ``binance-usdm``, ``binance-coinm``, ``bybit``, ``okx`` or "
    "``hyperliquid``.",
    "feed_symbol": "The venue's symbol, percent-encoded as one topic level.",
    "binance_account": "The account the Binance user-data message belongs to, percent-encoded "
    "as one topic level (``a%2Fb`` is the account ``a/b``); decoded, 1 to 256 printable "
    "characters, else the message is refused (``invalid_account``).",
}

_FEEDS = {
    "feed_stale": (FeedStalePayload, "Feed stale"),
    "feed_recovered": (FeedRecoveredPayload, "Feed recovered"),
}

_SERVICE = {
    "service_started": (ServiceStartedPayload, "Service started"),
    "service_stopped": (ServiceStoppedPayload, "Service stopped"),
}

_RECORDS: list[type[BaseModel]] = [
    ContractIn,
    BalanceIn,
    PositionIn,
    MarginIn,
    AccountSnapshotIn,
    AccountUpdateRecordIn,
    AssetModeIn,
    CollateralIn,
]

_ALERTS = {
    "margin_warning": (MarginWarningPayload, "Margin warning"),
    "margin_recovered": (MarginRecoveredPayload, "Margin recovered"),
    "liquidation": (LiquidationPayload, "Liquidation"),
}


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        MarginWarningPayload,
        MarginRecoveredPayload,
        LiquidationPayload,
        StatePayload,
        StatusPayload,
        FeedStalePayload,
        FeedRecoveredPayload,
        RejectPayload,
        ServiceStartedPayload,
        ServiceStoppedPayload,
        ShockRequestPayload,
        ShockAnswerPayload,
        ShockRefusalPayload,
        *_RECORDS,
        AccountUpdateIn,
        AccountConfigIn,
    ]
    _, top = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(top["$defs"].items()))


def _params(*names: str) -> dict[str, Any]:
    return {name: {"description": _PARAMETERS[name]} for name in names}


def _message(name: str, title: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{name}"},
        "bindings": {"mqtt": {"payloadFormatIndicator": 1, "bindingVersion": "0.2.0"}},
    }


_CORRELATION = {
    "type": "string",
    "format": "binary",
    "description": "MQTT 5 Correlation Data of the request, echoed by every answer to it",
}


def _shock(
    prefix: str,
    channels: dict[str, Any],
    operations: dict[str, Any],
    messages: dict[str, Any],
) -> None:
    """The what-if shock: MQTT 5 request/response (Response Topic and Correlation Data)."""
    request = _message(
        "ShockRequestPayload", "What-if shock request", (ShockRequestPayload.__doc__ or "").strip()
    )
    request["correlationId"] = {"location": "$message.header#/correlationData"}
    request["bindings"]["mqtt"].update(
        correlationData=_CORRELATION,
        responseTopic={
            "type": "string",
            "description": "where the answers go; by convention "
            f"``{prefix}/shock/response/{{client}}`` with the requester's client id",
        },
    )
    messages["ShockRequestPayload"] = request
    for model, title in (
        (ShockAnswerPayload, "What-if shock answer"),
        (ShockRefusalPayload, "What-if shock refused"),
    ):
        message = _message(model.__name__, title, (model.__doc__ or "").strip())
        message["correlationId"] = {"location": "$message.header#/correlationData"}
        message["bindings"]["mqtt"]["correlationData"] = _CORRELATION
        messages[model.__name__] = message
    channels["shock_request"] = {
        "address": shock_request_topic(prefix),
        "title": "What-if shock requests (MQTT 5 request/response)",
        "description": "Every ``liqmon run`` (and ``liqmon replay --mqtt`` while it replays) "
        "subscribes here and answers for its own book, on the request's Response Topic with "
        "its Correlation Data: exactly the alert events the moves would cause as the next "
        "ticks, all symbols at once, without changing anything. A requester in front of "
        "several instances adds the answers up (``liqmon shock``, ``liqmon dashboard``); the "
        "instances expected are those whose status is ``online``. A request without a Response "
        "Topic (MQTT 3.1.1) is not answered. QoS 1, not retained.",
        "messages": {"request": {"$ref": "#/components/messages/ShockRequestPayload"}},
    }
    channels["shock_response"] = {
        "address": None,
        "title": "What-if shock answers",
        "description": "The Response Topic given by the request (dynamic). One message per "
        "answering instance, carrying the request's Correlation Data; it expires after 60 s. "
        "QoS 1, not retained.",
        "messages": {
            "answer": {"$ref": "#/components/messages/ShockAnswerPayload"},
            "refusal": {"$ref": "#/components/messages/ShockRefusalPayload"},
        },
    }
    operations["receive_shock_request"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/shock_request"},
        "bindings": {"mqtt": {"qos": 1, "bindingVersion": "0.2.0"}},
        "reply": {
            "address": {
                "location": "$message.header#/responseTopic",
                "description": "the request's MQTT 5 Response Topic",
            },
            "channel": {"$ref": "#/channels/shock_response"},
            "messages": [
                {"$ref": "#/channels/shock_response/messages/answer"},
                {"$ref": "#/channels/shock_response/messages/refusal"},
            ],
        },
    }


def document(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (a plain dict, ready for YAML or JSON)."""
    channels: dict[str, Any] = {
        "status": {
            "address": f"{prefix}/status/{{instance}}",
            "title": "Instance status (retained)",
            "description": "``online`` on every connect, ``offline`` on a clean shutdown and as "
            "the Last Will when the instance dies. Retained: a late subscriber sees each "
            "instance's status at once.",
            "parameters": _params("instance"),
            "messages": {"status": {"$ref": "#/components/messages/StatusPayload"}},
        },
    }
    operations: dict[str, Any] = {
        "publishStatus": {
            "action": "send",
            "channel": {"$ref": "#/channels/status"},
            "bindings": {"mqtt": {"qos": 1, "retain": True, "bindingVersion": "0.2.0"}},
        }
    }
    messages: dict[str, Any] = {
        "StatusPayload": _message("StatusPayload", "Instance status", "online / offline"),
        "StatePayload": _message(
            "StatePayload", "Entity margin state", "The latest margin state of one entity."
        ),
    }
    for kind, (model, title) in _ALERTS.items():
        messages[model.__name__] = _message(model.__name__, title, (model.__doc__ or "").strip())
        for scope, path, names in (
            ("cross", "{account}/cross/{asset}", ("account", "asset")),
            ("isolated", "{account}/isolated/{symbol}/{side}", ("account", "symbol", "side")),
            ("pool", "{account}/pool/{asset}", ("account", "asset")),
        ):
            channel = f"{kind}_{scope}"
            channels[channel] = {
                "address": f"{prefix}/events/{kind}/{path}",
                "title": f"{title} ({scope})",
                "description": "QoS 1, not retained, at least once: de-duplicate by ``id``. On "
                "MQTT v5 the id is also the user property ``id``, and the message expires "
                "after the configured event expiry (one day by default).",
                "parameters": _params(*names),
                "messages": {kind: {"$ref": f"#/components/messages/{model.__name__}"}},
            }
            operations[f"publish_{channel}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
            }
    for kind, (model, title) in _FEEDS.items():
        messages[model.__name__] = _message(model.__name__, title, (model.__doc__ or "").strip())
        channels[kind] = {
            "address": f"{prefix}/events/{kind}/{{venue}}/{{feed_symbol}}",
            "title": title,
            "description": "QoS 1, not retained, at least once: de-duplicate by ``id``. Feed "
            "health of ``liqmon run --feed``: a symbol's marks stopped (``feed_stale``, after the "
            "configured multiple of its expected interval) or resumed (``feed_recovered``). "
            "Subscribing to ``events/#`` gets alerts and feed events; the kind level tells them "
            "apart.",
            "parameters": _params("venue", "feed_symbol"),
            "messages": {kind: {"$ref": f"#/components/messages/{model.__name__}"}},
        }
        operations[f"publish_{kind}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{kind}"},
            "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
        }
    messages["RejectPayload"] = _message(
        "RejectPayload", "Rejected input", (RejectPayload.__doc__ or "").strip()
    )
    channels["rejects"] = {
        "address": f"{prefix}/rejects",
        "title": "Rejected input",
        "description": "QoS 1, not retained, through the outbox in order with the alerts: every "
        "input ``liqmon run`` refused (an account input message, a line of ``--replay`` or "
        "``--accounts``, a venue's frame, a poll) because it failed validation or the engine "
        "refused it, with the reason and where it came from. Nothing of it was applied. A "
        "Binance user-data event that changes no account state is not a reject.",
        "messages": {"reject": {"$ref": "#/components/messages/RejectPayload"}},
    }
    operations["publish_rejects"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/rejects"},
        "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
    }
    for kind, (model, title) in _SERVICE.items():
        messages[model.__name__] = _message(model.__name__, title, (model.__doc__ or "").strip())
        channels[kind] = {
            "address": f"{prefix}/service/{kind}/{{instance}}",
            "title": title,
            "description": "QoS 1, not retained, through the outbox in order with the alerts: "
            "``liqmon run`` started (how, and what it restored: ``service_started``) or "
            "stopped after its last input (``service_stopped``). The same payloads are lines "
            "of the ``--out`` JSON Lines file.",
            "parameters": _params("instance"),
            "messages": {kind: {"$ref": f"#/components/messages/{model.__name__}"}},
        }
        operations[f"publish_{kind}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{kind}"},
            "bindings": {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}},
        }
    record_refs = {}
    for model in _RECORDS:
        messages[model.__name__] = _message(
            model.__name__, model.__name__.removesuffix("In"), (model.__doc__ or "").strip()
        )
        record_refs[model.__name__] = {"$ref": f"#/components/messages/{model.__name__}"}
    channels["in_records"] = {
        "address": f"{prefix}/in/records",
        "title": "Account input: normalized records",
        "description": "The trading system publishes account state here (QoS 1; liqmon reads "
        "with a persistent session and acknowledges a message only once it is journaled, so "
        "none is lost across a crash). One normalized record per message (``docs/records.md``: "
        "``contract``, ``balance``, ``position``, ``margin``, ``asset_mode``, ``collateral``), "
        "an ``account_snapshot`` that replaces everything liqmon holds for the account, or an "
        "``account_update`` that merges into it. A ``tick`` is refused "
        "(``tick_on_account_topic``): marks come from the feed only. At most 1 MiB, UTF-8, "
        "nested at most 8 levels, numbers plain ASCII decimals; a message that fails "
        "validation is published to ``rejects`` with its reason and not applied.",
        "messages": record_refs,
    }
    operations["receive_in_records"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/in_records"},
        "bindings": {"mqtt": {"qos": 1, "bindingVersion": "0.2.0"}},
    }
    messages["AccountUpdateIn"] = _message(
        "AccountUpdateIn", "Binance ACCOUNT_UPDATE", (AccountUpdateIn.__doc__ or "").strip()
    )
    messages["AccountConfigIn"] = _message(
        "AccountConfigIn",
        "Binance ACCOUNT_CONFIG_UPDATE",
        (AccountConfigIn.__doc__ or "").strip(),
    )
    channels["in_binance"] = {
        "address": f"{prefix}/in/binance/{{binance_account}}",
        "title": "Account input: Binance user-data events",
        "description": "A Binance futures user-data event of one account (bare, or in the "
        "``{stream, data}`` wrapper), forwarded as received. An ``ACCOUNT_UPDATE`` lists only "
        "changed balances and positions: liqmon merges them into the account. An "
        "``ACCOUNT_CONFIG_UPDATE`` with ``ai`` sets its Multi-Assets Mode. The other user-data "
        "events change nothing (acknowledged, no reject). JSON numbers are read exactly from "
        "their text.",
        "parameters": _params("binance_account"),
        "messages": {
            "accountUpdate": {"$ref": "#/components/messages/AccountUpdateIn"},
            "accountConfigUpdate": {"$ref": "#/components/messages/AccountConfigIn"},
        },
    }
    operations["receive_in_binance"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/in_binance"},
        "bindings": {"mqtt": {"qos": 1, "bindingVersion": "0.2.0"}},
    }
    for scope, path, names in (
        ("cross", "{account}/cross/{asset}", ("account", "asset")),
        ("isolated", "{account}/isolated/{symbol}/{side}", ("account", "symbol", "side")),
        ("pool", "{account}/pool/{asset}", ("account", "asset")),
    ):
        channel = f"state_{scope}"
        channels[channel] = {
            "address": f"{prefix}/state/{path}",
            "title": f"Entity state ({scope}, retained)",
            "description": "Retained latest state, coalesced: published when the alert level "
            "changes, when the margin ratio moved by the configured fraction (5 % by default) "
            "and at most every ``--state-interval-ms`` per entity. An empty retained message "
            "clears it when the entity is gone. Subscribe to the whole subtree to see the book.",
            "parameters": _params(*names),
            "messages": {"state": {"$ref": "#/components/messages/StatePayload"}},
        }
        operations[f"publish_{channel}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "bindings": {"mqtt": {"qos": 1, "retain": True, "bindingVersion": "0.2.0"}},
        }
    _shock(prefix, channels, operations, messages)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "liqmon alerts",
            "version": TOPIC_TREE_VERSION,
            "description": "Margin-ratio warnings, recoveries and liquidations of isolated "
            "positions and cross accounts, feed health events, the latest margin state of every "
            "entity, the status of each liqmon instance, its start and stop notices, the input "
            "it refused, the what-if shock (request/response), and the account input topics the "
            "trading system publishes to. Topic tree v1 "
            f"under the configurable prefix ``{prefix}``. Payloads are JSON; every one "
            "carries ``id`` and ``ts``.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "Any MQTT 5 (or 3.1.1) broker; liqmon connects with "
                "``--mqtt mqtt://host:port``.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
    }


def main() -> None:
    try:
        import yaml  # a development tool: PyYAML comes with the test extras
    except ImportError:  # pragma: no cover
        import json

        sys.stdout.write(json.dumps(document(), indent=2) + "\n")
        return
    sys.stdout.write(yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100))


if __name__ == "__main__":
    main()
