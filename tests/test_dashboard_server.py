"""``liqmon dashboard`` as a process: who may connect (loopback, token, basic auth, the page's
own origin), a broker that goes away and comes back, and ``liqmon demo --dashboard`` — with a
real Mosquitto, real HTTP and WebSocket clients and headless Chromium."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from alerts.encoding import state_payload
from alerts.topics import state_topic
from liqmon.broker import LocalBroker
from monitor.events import EntityRef, MarginStateChanged, PositionView
from tests import cli_support
from tests.browser_support import chromium
from tests.conftest import ROOT
from tests.mqtt_support import Collector
from tests.process_support import LIQMON, Liqmon

pytestmark = pytest.mark.integration

TOKEN = "a-long-enough-token"  # noqa: S105  # a test token
PASSWORD = "a-long-password"  # noqa: S105  # a test password


def _state(account: str, ratio: float, *, level: float | None = None) -> tuple[str, bytes]:
    entity = EntityRef(account, "isolated", "USDT", "BTCUSDT", "both")
    position = PositionView("BTCUSDT", "both", 0.1, 60_000.0, 59_000.0, 55_000.0, 54_000.0, 1)
    event = MarginStateChanged(1, entity, level, ratio, 100.0, 100.0 * ratio, False, (position,))
    return state_topic("liqmon/v1", entity), orjson.dumps(state_payload(event))


def _publish(broker: LocalBroker, *messages: tuple[str, bytes]) -> None:
    publisher = Collector(broker.port, [])
    try:
        for topic, payload in messages:
            publisher.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        publisher.stop()


def _start(broker: LocalBroker, *args: str) -> tuple[Liqmon, str]:
    dashboard = Liqmon("dashboard", "--mqtt", broker.url, "--port", "0", *args)
    line = dashboard.wait_for_line(lambda text: text.startswith("liqmon dashboard: http"))
    return dashboard, line.split()[2]


@pytest.fixture
def guarded(broker: LocalBroker) -> Iterator[tuple[str, LocalBroker]]:
    _publish(broker, _state("alice", 0.5))
    dashboard, url = _start(broker, "--token", TOKEN)
    try:
        yield url, broker
    finally:
        assert dashboard.stop() == 0


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310  # loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _snapshot(url: str, **options: Any) -> dict[str, Any]:
    with connect(url.replace("http://", "ws://") + "ws", **options) as ws:
        body: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return body


def test_a_non_loopback_bind_without_authentication_is_refused() -> None:
    """``--host 0.0.0.0`` without a token or basic auth stops at once with status 2, naming
    the fix; nothing is served."""
    result = cli_support.run(
        [*LIQMON, "dashboard", "--mqtt", "mqtt://127.0.0.1:1", "--host", "0.0.0.0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "set --token or --basic-auth" in result.stderr


def test_the_token_guards_the_page_its_assets_and_its_websocket(
    guarded: tuple[str, LocalBroker],
) -> None:
    """Without the token: 401 for the page, its script and the WebSocket. With it on the URL
    the page is served with an HttpOnly cookie that lets the assets and the WebSocket through;
    a Bearer header works for a program; and a browser opening ``/?token=`` gets the book."""
    url, _ = guarded
    assert _get(url)[0] == 401
    assert _get(url + "app.js")[0] == 401
    with pytest.raises(InvalidStatus) as refused:
        _snapshot(url)
    assert refused.value.response.status_code == 401
    status, headers, body = _get(url + f"?token={TOKEN}")
    assert status == 200
    assert b"<title>liqmon" in body
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert _get(url + "app.js", {"Cookie": cookie})[0] == 200
    snapshot = _snapshot(url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    assert [row[1] for row in snapshot["rows"]] == ["alice"]
    health = json.loads(_get(url + "healthz", {"Cookie": cookie})[2])
    assert health["broker"]["synced"] is True
    assert health["entities"] == 1
    with chromium() as browser:
        page = browser.new_page()
        page.goto(url + f"?token={TOKEN}")
        page.wait_for_selector("#book-rows .line[data-account='alice']", timeout=20_000)


def test_the_websocket_only_serves_the_page_s_own_origin(
    guarded: tuple[str, LocalBroker],
) -> None:
    """A page on another origin cannot read the book through the user's browser, even with
    the user's credentials; a Host that is not loopback is refused too (DNS rebinding)."""
    url, _ = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(InvalidStatus) as refused:
        _snapshot(url, additional_headers=auth, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert _snapshot(url, additional_headers=auth, origin=url.rstrip("/"))["t"] == "snapshot"  # type: ignore[arg-type]


def test_without_authentication_a_foreign_host_is_refused(broker: LocalBroker) -> None:
    """Bound to loopback without authentication, a request naming another host (a site that
    resolved its name to 127.0.0.1) gets 403, while 127.0.0.1 and localhost are served."""
    dashboard, url = _start(broker)
    try:
        assert _get(url)[0] == 200
        assert _get(url, {"Host": "evil.example:8050"})[0] == 403
        assert _get(url.replace("127.0.0.1", "localhost"))[0] == 200
    finally:
        assert dashboard.stop() == 0


def test_basic_auth_in_a_browser(broker: LocalBroker) -> None:
    """With ``--basic-auth``, a browser without credentials gets the 401 challenge; one with
    them gets the page and its WebSocket (the browser resends the credentials)."""
    _publish(broker, _state("bob", 0.6))
    dashboard, url = _start(broker, "--basic-auth", f"ops:{PASSWORD}")
    try:
        status, headers, _ = _get(url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        with chromium(http_credentials={"username": "ops", "password": PASSWORD}) as browser:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#book-rows .line[data-account='bob']", timeout=20_000)
    finally:
        assert dashboard.stop() == 0


def test_it_reconnects_to_the_broker_by_itself(broker: LocalBroker) -> None:
    """The broker stops: the page says so, keeps the book it has, and when the broker is back
    the dashboard reconnects alone; a state published then appears without a reload."""
    _publish(broker, _state("carol", 0.4))
    dashboard, url = _start(broker)
    try:
        with chromium(bypass_csp=True) as browser:  # wait_for_function evaluates strings
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("#book-rows .line[data-account='carol']", timeout=20_000)
            page.wait_for_selector("#broker[data-state='up']")
            broker.stop()
            page.wait_for_selector("#broker[data-state='down']", timeout=20_000)
            assert page.locator("#book-rows .line[data-account='carol']").count() == 1
            broker.start()
            page.wait_for_selector("#broker[data-state='up']", timeout=60_000)
            _publish(broker, _state("dave", 0.85, level=0.8))
            page.wait_for_selector("#book-rows .line.lv-2[data-account='dave']", timeout=20_000)
            assert page.locator("#book-rows .line[data-account='carol']").count() == 1
            assert page.evaluate("window.liqmonStats.snapshots") == 1
    finally:
        assert dashboard.stop() == 0


def test_liqmon_demo_dashboard_shows_the_crash_and_answers_what_if() -> None:
    """``liqmon demo --dashboard`` prints the page's URL; the page shows the crash's 13 alerts
    (3 liquidations) and its surviving entities, the what-if panel gets the demo engine's
    answer, and the demo keeps serving after the replay until Ctrl-C, then exits 0."""
    demo = Liqmon("demo", "--dashboard", "--port", "0", "--speed", "20000")
    try:
        line = demo.wait_for_line(lambda text: "the dashboard is at http" in text)
        url = line.split(" at ")[1].strip()
        with chromium(bypass_csp=True) as browser:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function(
                "document.querySelectorAll('#feed li').length === 13", timeout=60_000
            )
            assert page.locator("#feed li[data-kind='liquidation']").count() == 3
            demo.wait_for_line(lambda text: "replay done" in text, timeout=60)
            accounts = {
                page.get_attribute(f"#book-rows .line.first >> nth={i}", "data-account")
                for i in range(page.locator("#book-rows .line.first").count())
            }
            assert accounts == {"bob", "erin", "frank"}
            row = page.locator("#whatif-moves .move").first
            row.locator("select").select_option("XRPUSDT")
            row.locator("input").fill("-8%")
            page.click("#whatif-run")
            page.wait_for_selector("#whatif-result[data-state='answered']", timeout=30_000)
            liquidated = page.eval_on_selector_all(
                "#whatif-result tr.liquidations", "rows => rows.map(r => r.dataset.account)"
            )
            assert liquidated == ["frank"]
        assert demo.process.poll() is None  # still serving
    finally:
        status = demo.stop(signal.SIGINT)
    assert status == 0
    assert "events      13" in demo.output()
