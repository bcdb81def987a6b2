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
    LiquidationPayload,
    MarginRecoveredPayload,
    MarginWarningPayload,
    StatePayload,
    StatusPayload,
)
from alerts.topics import DEFAULT_PREFIX

TOPIC_TREE_VERSION = "1.0.0"

_PARAMETERS = {
    "instance": "The liqmon instance (``--instance``), percent-encoded as one topic level.",
    "account": "The account, percent-encoded as one topic level (``/``, ``+``, ``#``, ``%`` and "
    "control characters become ``%XX``).",
    "asset": "The margin asset of a cross entity.",
    "symbol": "The symbol of an isolated position.",
    "side": "The slot of an isolated position: ``both`` (one-way), ``long`` or ``short`` (hedge).",
}

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
    for scope, path, names in (
        ("cross", "{account}/cross/{asset}", ("account", "asset")),
        ("isolated", "{account}/isolated/{symbol}/{side}", ("account", "symbol", "side")),
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
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "liqmon alerts",
            "version": TOPIC_TREE_VERSION,
            "description": "Margin-ratio warnings, recoveries and liquidations of isolated "
            "positions and cross accounts, the latest margin state of every entity, and the "
            "status of each liqmon instance. Topic tree v1 under the configurable prefix "
            f"``{prefix}``. Payloads are JSON; every one carries ``id`` and ``ts``.",
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
