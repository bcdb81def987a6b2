"""Who may open the dashboard (sans-I/O: a request's path, query and headers in, a verdict out).

* **Bind.** Loopback by default. Any other address needs a token or basic auth: the page shows
  every account's book, and anyone who can reach the port could read it.
* **Authentication** (when set): a token, given as ``Authorization: Bearer T``, as ``?token=T``
  on the page's URL (the answer then sets an ``HttpOnly``, ``SameSite=Strict`` cookie, so the
  page's assets and its WebSocket carry it) or as that cookie; or basic auth
  (``Authorization: Basic``, which browsers resend to the same origin). Compared in constant
  time.
* **Without authentication** (loopback), the ``Host`` header must be a loopback name: a page on
  another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused.
* **The WebSocket** must come from the dashboard's own page: a browser's ``Origin`` must be the
  ``Host`` it asks (a page elsewhere cannot read the book through the user's browser).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from monitor.errors import ConfigError

COOKIE = "liqmon_token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    bare = host.strip("[]").lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8050`` → ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


@dataclass(frozen=True, slots=True)
class Verdict:
    """``status`` 200 lets the request through; otherwise the answer to send."""

    status: int
    reason: str = ""
    set_cookie: str | None = None
    challenge: str | None = None  # a WWW-Authenticate header value


ALLOWED = Verdict(200)


class Access:
    def __init__(
        self,
        bind_host: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
    ) -> None:
        if token is not None and basic is not None:
            raise ConfigError("dashboard: choose --token or --basic-auth, not both")
        if token is not None and len(token) < 8:
            raise ConfigError("dashboard: a token needs at least 8 characters")
        if basic is not None and (not basic[0] or len(basic[1]) < 8):
            raise ConfigError("dashboard: basic auth needs a user and a password of 8+ characters")
        if not is_loopback(bind_host) and token is None and basic is None:
            raise ConfigError(
                f"dashboard: binding {bind_host} (not loopback) shows the book to anyone who "
                "can reach it: set --token or --basic-auth"
            )
        self.bind_host = bind_host
        self._token = token
        self._basic = basic

    @property
    def authenticated(self) -> bool:
        return self._token is not None or self._basic is not None

    @staticmethod
    def parse_basic(text: str) -> tuple[str, str]:
        """``USER:PASS`` (the ``--basic-auth`` option)."""
        user, sep, password = text.partition(":")
        if not sep:
            raise ConfigError("dashboard: --basic-auth is USER:PASS")
        return user, password

    def check(self, path: str, headers: Mapping[str, str], *, websocket: bool) -> Verdict:
        """The verdict for a request (header names lower-case)."""
        host = headers.get("host", "")
        if not self.authenticated and not is_loopback(_host_name(host)):
            return Verdict(403, f"host {host!r} is not this machine's loopback")
        if websocket:
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return Verdict(403, "the WebSocket must come from the dashboard's own page")
        if self._token is not None:
            return self._check_token(path, headers)
        if self._basic is not None:
            return self._check_basic(headers)
        return ALLOWED

    def _check_token(self, path: str, headers: Mapping[str, str]) -> Verdict:
        assert self._token is not None  # noqa: S101  # called in token mode
        expected = self._token.encode()
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer ") and hmac.compare_digest(
            authorization[7:].strip().encode(), expected
        ):
            return ALLOWED
        for candidate in parse_qs(urlsplit(path).query).get("token", []):
            if hmac.compare_digest(candidate.encode(), expected):
                return Verdict(
                    200,
                    set_cookie=f"{COOKIE}={self._token}; Path=/; HttpOnly; SameSite=Strict",
                )
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), expected):
                return ALLOWED
        return Verdict(401, "a token is required: open the page as /?token=...")

    def _check_basic(self, headers: Mapping[str, str]) -> Verdict:
        assert self._basic is not None  # noqa: S101  # called in basic mode
        challenge = 'Basic realm="liqmon dashboard", charset="UTF-8"'
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("basic "):
            return Verdict(401, "authentication required", challenge=challenge)
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return Verdict(401, "malformed credentials", challenge=challenge)
        user, _, password = decoded.partition(":")
        want_user, want_password = self._basic
        ok_user = hmac.compare_digest(user.encode(), want_user.encode())
        ok_password = hmac.compare_digest(password.encode(), want_password.encode())
        if ok_user and ok_password:
            return ALLOWED
        return Verdict(401, "wrong user or password", challenge=challenge)
