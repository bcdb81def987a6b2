"""Settings of ``liqmon run``: a TOML file and/or ``LIQMON_*`` environment variables.

Precedence, highest first: command-line flags, environment, the ``--config`` file, defaults.
Nested settings use ``__`` in variable names (``LIQMON_MQTT__URL``, ``LIQMON_FEED__VENUE``);
lists are JSON (``LIQMON_FEED__SYMBOLS='["BTCUSDT","ETHUSDT"]'``) or comma-separated for
symbols. Secrets (the MQTT password) come from the environment or from a file
(``mqtt.password_file``, e.g. a Docker secret) and are masked wherever settings are shown.

An unknown key (in the file, or a ``LIQMON_SECTION__KEY`` variable of a known section) is an
error too, so a typo is never silently ignored. A bad setting fails at start with one message
naming it::

    liqmon: invalid setting mqtt.url (LIQMON_MQTT__URL or [mqtt] url): expected mqtt://...
"""

from __future__ import annotations

import socket
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from alerts.mqtt_settings import MqttSettings, settings_from_url
from alerts.topics import DEFAULT_PREFIX
from feeds.hyperliquid_info import WatchSpec, info_url_of
from feeds.live import FeedSpec
from monitor.config import EngineConfig
from monitor.errors import ConfigError

Venue = Literal["binance-usdm", "binance-coinm", "bybit", "okx", "hyperliquid"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineSection(_Section):
    levels: str = "0.7,0.8,0.9"
    hysteresis: Decimal = Decimal("0.05")
    policy: Literal["close", "hold"] = "hold"
    """A sidecar follows the trading system: it holds liquidated positions until told."""
    state_move: Decimal = Decimal("0.05")

    funding: bool = False
    """Settle the funding rates that ticks carry (docs/collateral.md §3)."""

    def config(self, *, state_sweep: bool = True) -> EngineConfig:
        """The service's engine: states found by sweeps between inputs, never on the alert
        path (:attr:`monitor.config.EngineConfig.state_sweep`); a cluster's owners find them
        tick by tick (``state_sweep=False``)."""
        return EngineConfig.from_values(
            self.levels,
            self.hysteresis,
            self.policy,
            self.state_move,
            funding=self.funding,
            state_sweep=state_sweep,
        )


class FeedSection(_Section):
    venue: Venue | None = None
    """None: no live feed (ticks come from ``replay`` instead, or only account records)."""
    symbols: list[str] | Literal["all"] = "all"
    """The symbols to watch, or ``all`` (Binance only: the ``!markPrice@arr`` stream)."""
    url: str | None = None
    """Overrides the venue's endpoint (a proxy, a testnet, a local test server)."""
    expected_interval_ms: int | None = Field(default=None, ge=10)
    """The longest normal gap between two marks of a symbol (None: the venue's: 1 s on Binance,
    20 s on Bybit, 10 s on OKX)."""
    stale_after: float = Field(default=5.0, ge=1.0)
    """A symbol is stale after this many expected intervals without a mark."""
    price_source: Literal["mark", "trade", "mid"] = "mark"
    record_dir: Path | None = None
    """Also write every raw frame of the venue to capture files here (``liqmon record``'s
    format), so the live run can be replayed exactly."""
    replay: Path | None = None
    """A recorded file to use as the tick source instead of a venue (tests, dry runs)."""
    replay_speed: float | None = Field(default=None, gt=0)
    exit_at_end: bool = False
    """With ``replay``: stop (gracefully) once the file is applied."""
    watch: list[str] = Field(default_factory=list)
    """Hyperliquid: the addresses whose state is polled from the info API (``--watch``)."""
    watch_interval_s: float = Field(default=10.0, gt=0)
    """Hyperliquid: how often each watched address's state is polled."""
    meta_interval_s: float = Field(default=300.0, gt=0)
    """Hyperliquid: how often the dexes' ``meta`` (contracts) is polled for changes."""
    info_url: str | None = None
    """Hyperliquid: the info endpoint (None: beside ``url``, ``wss://h/ws`` → ``https://h/info``)."""
    dexes: list[str] = Field(default_factory=lambda: [""])
    """Hyperliquid: the perp dexes to watch (``""``: the first dex; ``xyz``: a HIP-3 dex)."""

    @field_validator("watch", "dexes", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",")]
        return value

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and value != "all":
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @model_validator(mode="after")
    def _usable(self) -> FeedSection:
        if self.venue is not None:
            if self.replay is not None:
                raise ValueError("a venue and a replay file are two tick sources: choose one")
            self.spec()  # the venue's own rules (URL scheme, symbol limits)
        if self.watch and self.venue != "hyperliquid":
            raise ValueError("watch: watching addresses needs the hyperliquid feed")
        if self.venue == "hyperliquid":
            self.watch_spec()
        return self

    def spec(self) -> FeedSpec:
        """The live feed this section describes (``venue`` must be set)."""
        assert self.venue is not None  # noqa: S101  # only called with a venue
        options: dict[str, Any] = {"venue": self.venue, "symbols": self.symbols}
        if self.url:
            options["url"] = self.url
        if self.expected_interval_ms is not None:
            options["expected_interval_s"] = self.expected_interval_ms / 1000
        if self.venue == "hyperliquid":
            options["price_source"] = self.price_source
            options["dexes"] = tuple(self.dexes)
            options["refresh_s"] = self.meta_interval_s
        try:
            return FeedSpec(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where + ': ' if where else ''}{message}") from None

    def watch_spec(self) -> WatchSpec:
        """The Hyperliquid info polls this section describes (``venue`` is hyperliquid)."""
        spec = self.spec()
        try:
            return WatchSpec(
                addresses=tuple(s for s in self.watch if s),
                dexes=spec.dexes,
                url=self.info_url or info_url_of(spec.url),
                interval_s=self.watch_interval_s,
                meta_interval_s=self.meta_interval_s,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(first["msg"].removeprefix("Value error, ")) from None


class MqttSection(_Section):
    url: str | None = None
    """``mqtt://user@host:port`` or ``mqtts://...``; None: no MQTT (alerts to --out only)."""
    password: SecretStr | None = None
    password_file: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    prefix: str = DEFAULT_PREFIX
    instance: str = Field(default_factory=lambda: socket.gethostname() or "liqmon")
    state_interval_ms: int = Field(default=1_000, ge=0)
    state_rate: int = Field(default=1_000, ge=1)
    """Retained states published per second at most (alerts are never limited)."""
    event_expiry_s: int = Field(default=86_400, ge=1)
    accounts_input: bool = True
    """Subscribe to the account input topics (``{prefix}/in/...``)."""
    answer_shocks: bool = True
    """Answer what-if shock requests (``{prefix}/shock/request``, MQTT 5 only)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                settings_from_url(value)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("mqtt: ")) from None
        return value

    def client_settings(self) -> MqttSettings:
        assert self.url is not None  # noqa: S101  # only called when MQTT is configured
        password = self.password
        if password is None and self.password_file is not None:
            password = SecretStr(self.password_file.read_text().strip())
        settings = settings_from_url(
            self.url,
            protocol=self.protocol,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            prefix=self.prefix,
            instance=self.instance,
            state_interval_ms=self.state_interval_ms,
            state_rate=self.state_rate,
            event_expiry_s=self.event_expiry_s,
        )
        return settings.model_copy(update={"password": password}) if password else settings


class StateSection(_Section):
    dir: Path = Path("liqmon-state")
    """Snapshot, journal and outbox live here; keep it on a persistent volume."""
    snapshot_interval_s: float = Field(default=60.0, gt=0)
    start: Literal["auto", "fresh", "resume"] = "auto"
    """With state left by other inputs: ``auto`` refuses to start, ``resume`` continues from it,
    ``fresh`` discards it (``--resume``, ``--fresh``; see docs/operations.md)."""
    fsync: bool = False
    """fsync journal and outbox writes (survives power loss, not just a crash of liqmon)."""


class HttpSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ClusterSection(_Section):
    """Sharded, highly available ``liqmon run`` on NATS JetStream (docs/deployment.md): set
    ``urls`` to run as one instance of a cluster instead of alone."""

    urls: list[str] = Field(default_factory=list)
    """The NATS servers (``nats://host:4222``), any of which will do."""
    partitions: int = Field(default=3, ge=1, le=1024)
    """N of the servers' ``partition(N, account)`` mapping: the same number everywhere."""
    prefix: str = Field(default="liqmon", pattern=r"^[A-Za-z0-9_-]+$")
    stream: str = Field(default="LIQMON", pattern=r"^[A-Za-z0-9_-]+$")
    leases: str = Field(default="liqmon-leases", pattern=r"^[A-Za-z0-9_-]+$")
    snapshots: str = Field(default="liqmon-snapshots", pattern=r"^[A-Za-z0-9_-]+$")
    replicas: int = Field(default=3, ge=1, le=5)
    lease_s: float = Field(default=5.0, ge=0.5)
    """A lease lasts this long unrenewed: a standby takes a dead owner's partition within it
    and a quarter more."""
    max_partitions: int = Field(default=1, ge=1)
    """Partitions one instance owns at most (three shards and a standby: 3 and 4 instances)."""
    snapshot_interval_s: float = Field(default=10.0, gt=0)
    """An owner saves its partition's snapshot this often (once it has applied something new):
    how much of the log a takeover replays."""
    log_retention_s: float = Field(default=7 * 86_400.0, gt=0)
    """The stream keeps messages this long (when liqmon creates it): far longer than a
    snapshot interval, or a takeover finds the log after its snapshot gone."""

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"expected nats://host:port or tls://host:port, got {url!r}")
        return value


class ServiceSettings(BaseSettings):
    """Everything ``liqmon run`` needs (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="LIQMON_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    engine: EngineSection = Field(default_factory=EngineSection)
    feed: FeedSection = Field(default_factory=FeedSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    state: StateSection = Field(default_factory=StateSection)
    http: HttpSection = Field(default_factory=HttpSection)
    log: LogSection = Field(default_factory=LogSection)
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    accounts: Path | None = None
    """Normalized records (contracts, balances, positions, snapshots) to seed a fresh start."""
    brackets: list[Path] = Field(default_factory=list)
    out: Path | None = None
    """A JSON Lines file the alert events are appended to."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls, cls._file_data())

    @classmethod
    def _file_data(cls) -> dict[str, Any]:
        """The ``--config`` file's content (a subclass made by :func:`load_settings` has it)."""
        return {}


class _FileSource(PydanticBaseSettingsSource):
    """Already-parsed TOML data, below the environment in precedence."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Settings from defaults, the TOML file, the environment and ``overrides`` (command-line
    flags, as nested dicts). Raises :class:`ConfigError` with one message naming the setting."""
    data = _read_toml(config_file) if config_file is not None else {}

    class Configured(ServiceSettings):
        @classmethod
        def _file_data(cls) -> dict[str, Any]:
            return data

    try:
        return Configured(**overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        path = ".".join(str(part) for part in error["loc"])
        env = "LIQMON_" + "__".join(str(part).upper() for part in error["loc"])
        section, _, key = path.rpartition(".")
        where = f"[{section}] {key}" if section else key
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"invalid setting {path} ({env} or {where}): {message}")
    more = len(exc.errors()) - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def masked(settings: ServiceSettings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked (``liqmon config --print``)."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    if settings.mqtt.password is not None:
        data["mqtt"]["password"] = "***"  # noqa: S105  # the mask, not a password
    url = settings.mqtt.url
    if url:
        data["mqtt"]["url"] = settings_from_url(url).display_url()
    return data
