"""config.toml → typed daemon configuration, with errors that name the file and the key.

Paths in the file resolve relative to the file's folder, and that folder is put on the
import path so ``definition = "my_flows:factory"`` can name a module beside it.
Which file: ``--config``, else ``$COCOD_CONFIG``, else the first that exists of
``$CONFIGURATION_DIRECTORY/config.toml`` (systemd), ``./config.toml``,
``$XDG_CONFIG_HOME/cocod/config.toml``; none is an empty daemon. Environment beats the
file: ``COCOD_SOCKET`` over ``[daemon] socket``; ``COCOD_DATABASE_URL`` over
``COCOINDEX_DATABASE_URL`` (v0) over ``[database] url``. Every value is checked (type,
range, durations > 0) and an error names the file, the key and the value.

``[daemon] metrics = "127.0.0.1:9464"`` serves Prometheus metrics there (off unless set;
port 0 picks a free port, logged as ``metrics.listening``); ``[daemon] embed_threads = N``
caps the threads the embedding model computes with. ``[daemon] lease_timeout = "15s"``
is how long a silent daemon still owns its instances (daemons sharing a database:
docs/scale-out.md) and ``weight = 1`` its relative share of them.
``[flows.NAME] auto_setup = false`` makes an on-demand instance wait for an explicit
``cocod setup`` instead of being set up when the daemon opens it.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cocod.control.client import default_socket_path
from cocod.errors import SettingsError
from cocod.flow.naming import validate_flow_name
from cocod.setting import default_state_dir

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, where: str) -> float:
    """``"10m"``, ``"30s"``, ``"1.5h"`` or a number of seconds → seconds (> 0)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds is None or not math.isfinite(seconds):
        raise SettingsError(f'{where} = {value!r}: not a duration (e.g. "10m", "30s", 90)')
    if seconds <= 0:
        raise SettingsError(f'{where} = {value!r}: must be longer than zero (e.g. "30s")')
    return seconds


@dataclass(frozen=True)
class InstanceConfig:
    name: str
    definition: str
    params: dict[str, Any] = field(default_factory=dict)
    live: bool = True
    auto_setup: bool = True
    """Set up (idempotently) whenever the daemon opens the instance, as v0's examples do
    with ``open_flow`` then ``setup()``; false: an explicit ``cocod setup`` is needed."""

    def identity(self) -> tuple[str, str, bool, bool]:
        import json

        return (
            self.definition,
            json.dumps(self.params, sort_keys=True),
            self.live,
            self.auto_setup,
        )


@dataclass(frozen=True)
class MetricsAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class DaemonConfig:
    path: Path | None
    base_dir: Path
    socket: Path
    state_dir: Path
    database_url: str | None
    max_open_flows: int = 20
    idle_ttl: float = 600.0
    drain_timeout: float = 20.0
    flows: dict[str, InstanceConfig] = field(default_factory=dict)
    metrics: MetricsAddress | None = None
    embed_threads: int | None = None
    lease_timeout: float = 15.0
    """A daemon whose heartbeat is older than this owns nothing any more (its instances
    may be taken over); it heartbeats every third of it."""
    weight: int = 1
    """Its relative share of the live instances among the daemons sharing the database."""


def find_config_file(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """--config, else $COCOD_CONFIG, $CONFIGURATION_DIRECTORY/config.toml, ./config.toml,
    $XDG_CONFIG_HOME/cocod/config.toml; None if none exists (an empty daemon)."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if from_env := env.get("COCOD_CONFIG"):
        return Path(from_env)
    candidates = []
    if systemd := env.get("CONFIGURATION_DIRECTORY"):
        candidates.append(Path(systemd.split(":")[0]) / "config.toml")
    candidates.append(Path.cwd() / "config.toml")
    xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidates.append(Path(xdg) / "cocod" / "config.toml")
    return next((c for c in candidates if c.is_file()), None)


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> DaemonConfig:
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: invalid TOML: {e}") from None
        base_dir = path.resolve().parent
    where = str(path) if path else "<defaults>"
    daemon = _table(data, "daemon", where)
    database = _table(data, "database", where)
    flows = _table(data, "flows", where)
    unknown = set(data) - {"daemon", "database", "flows"}
    if unknown:
        raise SettingsError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    for section, table, known in (
        (
            "daemon",
            daemon,
            {
                "socket",
                "state_dir",
                "max_open_flows",
                "idle_ttl",
                "drain_timeout",
                "metrics",
                "embed_threads",
                "lease_timeout",
                "weight",
            },
        ),
        ("database", database, {"url"}),
    ):
        if extra := set(table) - known:
            raise SettingsError(
                f"{where}: unknown key(s) in [{section}]: {', '.join(sorted(extra))} "
                f"(known: {', '.join(sorted(known))})"
            )

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base_dir / p

    state_dir = (
        resolve(_str(daemon, "state_dir", where)) if "state_dir" in daemon else None
    ) or default_state_dir(env)
    if env.get("COCOD_SOCKET"):
        socket = Path(env["COCOD_SOCKET"])
    elif "socket" in daemon:
        socket = resolve(_str(daemon, "socket", where))
    else:
        socket = default_socket_path({**env, "COCOD_STATE_DIR": str(state_dir)})
    url = env.get("COCOD_DATABASE_URL") or env.get("COCOINDEX_DATABASE_URL")
    if "url" in database:
        configured = _str(database, "url", where, "database")  # checked even when overridden
        url = url or configured
    config = DaemonConfig(
        path=path,
        base_dir=base_dir,
        socket=socket,
        state_dir=state_dir,
        database_url=url or None,
        max_open_flows=_int(daemon, "max_open_flows", where, 20),
        idle_ttl=parse_duration(daemon.get("idle_ttl", 600), f"{where}: [daemon] idle_ttl"),
        drain_timeout=parse_duration(
            daemon.get("drain_timeout", 20), f"{where}: [daemon] drain_timeout"
        ),
        metrics=(
            parse_metrics_address(daemon["metrics"], f"{where}: [daemon] metrics")
            if "metrics" in daemon
            else None
        ),
        embed_threads=_int(daemon, "embed_threads", where, 1)
        if "embed_threads" in daemon
        else None,
        lease_timeout=parse_duration(
            daemon.get("lease_timeout", 15), f"{where}: [daemon] lease_timeout"
        ),
        weight=_int(daemon, "weight", where, 1),
    )
    for name, body in flows.items():
        config.flows[name] = parse_instance(name, body, f"{where}: flows.{name}", resolve)
    return config


def parse_instance(name: str, body: object, where: str, resolve: Any = None) -> InstanceConfig:
    try:
        validate_flow_name(name)
    except ValueError as e:
        raise SettingsError(f"{where}: {e}") from None
    if not isinstance(body, dict):
        raise SettingsError(f"{where}: must be a table")
    unknown = set(body) - {"definition", "live", "params", "auto_setup"}
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    definition = body.get("definition")
    if not isinstance(definition, str) or ":" not in definition:
        raise SettingsError(f'{where}.definition: expected "package.module:factory"')
    live = body.get("live", True)
    if not isinstance(live, bool):
        raise SettingsError(f"{where}.live: expected true or false")
    auto_setup = body.get("auto_setup", True)
    if not isinstance(auto_setup, bool):
        raise SettingsError(f"{where}.auto_setup: expected true or false")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise SettingsError(f"{where}.params: expected a table")
    if resolve is not None:
        params = {k: _resolve_path_param(k, v, resolve) for k, v in params.items()}
    return InstanceConfig(name, definition, params, live, auto_setup)


def parse_metrics_address(value: object, where: str) -> MetricsAddress:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``":9464"`` (localhost) → host and port."""
    if not isinstance(value, str) or ":" not in value:
        raise SettingsError(f'{where} = {value!r}: expected "host:port" (e.g. "127.0.0.1:9464")')
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(
            f"{where} = {value!r}: the port must be a number from 0 to 65535 (0 picks a free one)"
        )
    return MetricsAddress(host, int(port_text))


def _resolve_path_param(key: str, value: Any, resolve: Any) -> Any:
    """Params named ``*path``/``*dir`` holding relative paths resolve against the config."""
    if isinstance(value, str) and (key.endswith("path") or key.endswith("dir")) and value:
        return str(resolve(value))
    return value


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SettingsError(f"{where}: [{key}] must be a table")
    return value


def _str(table: dict[str, Any], key: str, where: str, section: str = "daemon") -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{where}: [{section}] {key} = {value!r}: must be a non-empty string")
    return value


def _int(table: dict[str, Any], key: str, where: str, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{where}: [daemon] {key} = {value!r}: must be an integer of 1 or more")
    return value
