"""MQTT settings and topic names: the pure parts of the MQTT clients."""

from __future__ import annotations

import pytest

from alerts.mqtt_settings import settings_from_url
from alerts.topics import event_filter, event_topic, level, state_filter, state_topic
from monitor.errors import ConfigError
from monitor.events import EntityRef


def test_url_with_credentials_parses_and_masks_the_password() -> None:
    """user:password@host:port is read; the password only ever shows as ***."""
    settings = settings_from_url("mqtt://ops:s3cr%40t@broker.example:1884")
    assert (settings.host, settings.port, settings.username) == ("broker.example", 1884, "ops")
    assert settings.password is not None
    assert settings.password.get_secret_value() == "s3cr@t"
    assert settings.display_url() == "mqtt://ops:***@broker.example:1884"
    assert "s3cr" not in repr(settings)
    assert "s3cr" not in str(settings.model_dump())


def test_mqtts_defaults_to_port_8883_with_tls() -> None:
    """The TLS scheme switches TLS on and the default port to 8883."""
    settings = settings_from_url("mqtts://broker.example", ca_file="/etc/ca.pem")
    assert (settings.tls, settings.port, settings.ca_file) == (True, 8883, "/etc/ca.pem")


@pytest.mark.parametrize(
    "url", ["http://host", "broker:1883", "mqtt://", "mqtt://host:notaport", "mqtt://host:70000"]
)
def test_bad_urls_fail_with_a_message_naming_mqtt(url: str) -> None:
    """A URL that is not mqtt(s)://host[:port] is a configuration error, not a crash."""
    with pytest.raises(ConfigError, match="mqtt"):
        settings_from_url(url)


def test_names_are_encoded_into_single_topic_levels() -> None:
    """MQTT's separators and wildcards cannot leak from a name into the topic structure."""
    assert level("alice") == "alice"
    assert level("a/b") == "a%2Fb"
    assert level("+#") == "%2B%23"
    assert level("50%") == "50%25"
    assert level("tab\there") == "tab%09here"
    assert level("") == "%00"


def test_topics_follow_the_documented_tree() -> None:
    """Events, states and their subscription filters (see alerts/topics.py)."""
    cross = EntityRef("alice", "cross", "USDT")
    isolated = EntityRef("bob/x", "isolated", "USDT", "BTCUSDT", "long")
    prefix = "liqmon/v1"
    assert (
        event_topic(prefix, "liquidation", cross) == "liqmon/v1/events/liquidation/alice/cross/USDT"
    )
    assert (
        event_topic(prefix, "margin_warning", isolated)
        == "liqmon/v1/events/margin_warning/bob%2Fx/isolated/BTCUSDT/long"
    )
    assert state_topic(prefix, cross) == "liqmon/v1/state/alice/cross/USDT"
    assert event_filter(prefix) == "liqmon/v1/events/+/#"
    assert event_filter(prefix, account="alice") == "liqmon/v1/events/+/alice/#"
    assert event_filter(prefix, kind="liquidation") == "liqmon/v1/events/liquidation/#"
    assert state_filter(prefix) == "liqmon/v1/state/#"
