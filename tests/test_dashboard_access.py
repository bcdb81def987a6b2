"""``liqmon.dashboard.access``: loopback by default, a token or basic auth for anything else,
and the page's WebSocket only from its own origin."""

from __future__ import annotations

import base64

import pytest

from liqmon.dashboard.access import COOKIE, Access, is_loopback
from monitor.errors import ConfigError

LOCAL = {"host": "127.0.0.1:8050"}
EVERYWHERE = "0.0.0.0"  # noqa: S104  # what the checks are about
TOKEN = "s3cret-token"  # noqa: S105  # a test token
SHORT = "short"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        (EVERYWHERE, False),
        ("192.168.1.5", False),
        ("dashboard.example.com", False),
        ("::", False),
    ],
)
def test_loopback_is_recognised(host: str, loopback: bool) -> None:
    """Names and addresses (IPv4, IPv6, bracketed or not) of this machine's loopback only."""
    assert is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_authentication() -> None:
    """0.0.0.0 without a token or basic auth is refused at start, naming the fix; with one it
    is accepted; a short token or password is refused, and so is asking for both."""
    with pytest.raises(ConfigError, match="--token or --basic-auth"):
        Access(EVERYWHERE)
    Access(EVERYWHERE, token=TOKEN)
    Access(EVERYWHERE, basic=("ops", "long-password"))
    with pytest.raises(ConfigError, match="8 characters"):
        Access(EVERYWHERE, token=SHORT)
    with pytest.raises(ConfigError, match="not both"):
        Access(EVERYWHERE, token=TOKEN, basic=("ops", "long-password"))


def test_without_authentication_only_loopback_hosts_are_served() -> None:
    """A request whose Host is not loopback (a DNS-rebinding page) is refused; localhost and
    127.0.0.1 with any port pass."""
    access = Access("127.0.0.1")
    assert access.check("/", LOCAL, websocket=False).status == 200
    assert access.check("/", {"host": "localhost:8050"}, websocket=False).status == 200
    assert access.check("/", {"host": "[::1]:8050"}, websocket=False).status == 200
    assert access.check("/", {"host": "evil.example:8050"}, websocket=False).status == 403


def test_the_websocket_must_come_from_the_page_s_own_origin() -> None:
    """A browser on another origin cannot open the book's WebSocket; the page's own origin
    can, and a client that sends no Origin (not a browser) is left to authentication."""
    access = Access("127.0.0.1")
    same = {**LOCAL, "origin": "http://127.0.0.1:8050"}
    other = {**LOCAL, "origin": "https://evil.example"}
    assert access.check("/ws", same, websocket=True).status == 200
    assert access.check("/ws", other, websocket=True).status == 403
    assert access.check("/ws", LOCAL, websocket=True).status == 200


def test_a_token_is_taken_from_the_header_the_url_or_its_cookie() -> None:
    """Bearer header, ``?token=`` (which sets an HttpOnly SameSite cookie) and the cookie are
    accepted; a missing or wrong token is a 401."""
    access = Access(EVERYWHERE, token=TOKEN)
    remote = {"host": "10.0.0.2:8050"}
    assert access.check("/", remote, websocket=False).status == 401
    bearer = {**remote, "authorization": "Bearer s3cret-token"}
    assert access.check("/", bearer, websocket=False).status == 200
    via_url = access.check("/?token=s3cret-token", remote, websocket=False)
    assert via_url.status == 200
    assert via_url.set_cookie is not None
    assert via_url.set_cookie.startswith(f"{COOKIE}=s3cret-token;")
    assert "HttpOnly" in via_url.set_cookie
    assert "SameSite=Strict" in via_url.set_cookie
    cookie = {**remote, "cookie": f"theme=dark; {COOKIE}=s3cret-token"}
    assert access.check("/app.js", cookie, websocket=False).status == 200
    assert access.check("/?token=s3cret-tokem", remote, websocket=False).status == 401
    wrong = {**remote, "cookie": f"{COOKIE}=nope"}
    assert access.check("/ws", wrong, websocket=True).status == 401


def test_basic_auth_answers_with_a_challenge() -> None:
    """Right credentials pass; none, wrong or malformed ones get a 401 with the
    WWW-Authenticate challenge that makes a browser ask."""
    access = Access(EVERYWHERE, basic=("ops", "long-password"))
    remote = {"host": "10.0.0.2:8050"}
    good = {**remote, "authorization": _basic("ops", "long-password")}
    assert access.check("/", good, websocket=False).status == 200
    for headers in (
        remote,
        {**remote, "authorization": _basic("ops", "wrong-password")},
        {**remote, "authorization": _basic("root", "long-password")},
        {**remote, "authorization": "Basic not*base64"},
    ):
        verdict = access.check("/", headers, websocket=False)
        assert verdict.status == 401
        assert verdict.challenge is not None
        assert verdict.challenge.startswith("Basic realm=")
    assert Access.parse_basic("ops:pa:ss") == ("ops", "pa:ss")
    with pytest.raises(ConfigError):
        Access.parse_basic("no-colon")
