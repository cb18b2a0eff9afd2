"""config.toml validation and where each setting comes from (file, environment, default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cocod.daemon.config import MetricsAddress, find_config_file, load_config, parse_duration
from cocod.daemon.definitions import builtin_instance, table_name_for
from cocod.errors import ProtocolError, SettingsError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


ENV: dict[str, str] = {"COCOD_STATE_DIR": "/state"}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("drain_timeout = -5", ["drain_timeout", "-5", "longer than zero"]),
        ("drain_timeout = 0", ["drain_timeout", "0", "longer than zero"]),
        ('idle_ttl = "0s"', ["idle_ttl", "'0s'", "longer than zero"]),
        ('idle_ttl = "-1m"', ["idle_ttl", "'-1m'", "not a duration"]),
        ('idle_ttl = "soon"', ["idle_ttl", "'soon'", "not a duration"]),
        ("idle_ttl = true", ["idle_ttl", "True", "not a duration"]),
        ("idle_ttl = nan", ["idle_ttl", "nan", "not a duration"]),
        ("max_open_flows = 0", ["max_open_flows", "0", "1 or more"]),
        ("max_open_flows = -3", ["max_open_flows", "-3", "1 or more"]),
        ('max_open_flows = "5"', ["max_open_flows", "'5'", "integer"]),
        ("max_open_flows = 2.5", ["max_open_flows", "2.5", "integer"]),
        ("socket = 5", ["socket", "5", "string"]),
        ('state_dir = ""', ["state_dir", "''", "non-empty string"]),
        ("surprise = 1", ["unknown key", "surprise"]),
        ("metrics = 9464", ["metrics", "9464", "host:port"]),
        ('metrics = "localhost"', ["metrics", "'localhost'", "host:port"]),
        ('metrics = "127.0.0.1:http"', ["metrics", "port must be a number"]),
        ('metrics = "127.0.0.1:70000"', ["metrics", "70000", "0 to 65535"]),
        ("embed_threads = 0", ["embed_threads", "0", "1 or more"]),
        ('embed_threads = "2"', ["embed_threads", "'2'", "integer"]),
        ('lease_timeout = "0s"', ["lease_timeout", "'0s'", "longer than zero"]),
        ('lease_timeout = "later"', ["lease_timeout", "'later'", "not a duration"]),
        ("weight = 0", ["weight", "0", "1 or more"]),
        ("weight = 1.5", ["weight", "1.5", "integer"]),
    ],
)
def test_invalid_daemon_values_name_the_file_the_key_and_the_value(
    tmp_path: Path, line: str, words: list[str]
) -> None:
    path = _config(tmp_path, f"[daemon]\n{line}\n")
    with pytest.raises(SettingsError) as caught:
        load_config(path, ENV)
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_invalid_database_url_and_sections(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[database\] url = 5"):
        load_config(_config(tmp_path, "[database]\nurl = 5\n"), ENV)
    with pytest.raises(SettingsError, match="unknown section"):
        load_config(_config(tmp_path, "[deamon]\nsocket = 'x'\n"), ENV)
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_config(_config(tmp_path, "[daemon\n"), ENV)
    with pytest.raises(SettingsError, match="does not exist"):
        load_config(tmp_path / "missing.toml", ENV)


def test_valid_values_and_defaults(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        '[daemon]\ndrain_timeout = "1.5m"\nidle_ttl = 90\nmax_open_flows = 3\n'
        'socket = "run/c.sock"\nstate_dir = "st"\n',
    )
    config = load_config(path, {})
    assert (config.drain_timeout, config.idle_ttl, config.max_open_flows) == (90.0, 90.0, 3)
    assert config.socket == tmp_path / "run" / "c.sock"  # relative to the file's folder
    assert config.state_dir == tmp_path / "st"
    defaults = load_config(None, ENV)
    assert (defaults.drain_timeout, defaults.idle_ttl, defaults.max_open_flows) == (20, 600, 20)
    assert parse_duration("250ms", "x") == 0.25


def test_lease_timeout_and_weight_of_a_cluster_member(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[daemon]\nlease_timeout = "3s"\nweight = 4\n'), ENV)
    assert (config.lease_timeout, config.weight) == (3.0, 4)
    defaults = load_config(None, ENV)
    assert (defaults.lease_timeout, defaults.weight) == (15.0, 1)


def test_environment_beats_the_file_for_socket_and_database(tmp_path: Path) -> None:
    path = _config(
        tmp_path, '[daemon]\nsocket = "file.sock"\n[database]\nurl = "postgresql://file/db"\n'
    )
    from_file = load_config(path, ENV)
    assert from_file.socket == tmp_path / "file.sock"
    assert from_file.database_url == "postgresql://file/db"

    v0 = load_config(path, {**ENV, "COCOINDEX_DATABASE_URL": "postgresql://v0/db"})
    assert v0.database_url == "postgresql://v0/db"
    both = {
        **ENV,
        "COCOINDEX_DATABASE_URL": "postgresql://v0/db",
        "COCOD_DATABASE_URL": "postgresql://cocod/db",
        "COCOD_SOCKET": "/env/cocod.sock",
    }
    overridden = load_config(path, both)
    assert overridden.database_url == "postgresql://cocod/db"
    assert overridden.socket == Path("/env/cocod.sock")


def test_socket_defaults_follow_the_runtime_and_state_directories() -> None:
    assert load_config(None, {"RUNTIME_DIRECTORY": "/run/cocod"}).socket == Path(
        "/run/cocod/cocod.sock"
    )
    assert load_config(None, {"XDG_RUNTIME_DIR": "/run/user/7"}).socket == Path(
        "/run/user/7/cocod/cocod.sock"
    )
    in_state = load_config(None, {"COCOD_STATE_DIR": "/var/lib/x"})
    assert in_state.state_dir == Path("/var/lib/x")
    if not Path("/run/cocod/cocod.sock").exists():  # a system service's socket wins otherwise
        assert in_state.socket == Path("/var/lib/x/cocod.sock")
    xdg = load_config(None, {"XDG_STATE_HOME": "/home/u/.state"})
    assert xdg.state_dir == Path("/home/u/.state/cocod")
    systemd = load_config(None, {"STATE_DIRECTORY": "/var/lib/cocod:/other"})
    assert systemd.state_dir == Path("/var/lib/cocod")


def test_which_config_file_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    systemd_dir = tmp_path / "etc"
    xdg_dir = tmp_path / "xdg"
    (xdg_dir / "cocod").mkdir(parents=True)
    (xdg_dir / "cocod" / "config.toml").write_text("")
    env = {"XDG_CONFIG_HOME": str(xdg_dir), "CONFIGURATION_DIRECTORY": str(systemd_dir)}
    assert find_config_file(None, env) == xdg_dir / "cocod" / "config.toml"
    (tmp_path / "config.toml").write_text("")
    assert find_config_file(None, env) == tmp_path / "config.toml"
    systemd_dir.mkdir()
    (systemd_dir / "config.toml").write_text("")
    assert find_config_file(None, env) == systemd_dir / "config.toml"
    assert find_config_file(None, {**env, "COCOD_CONFIG": "/explicit.toml"}) == Path(
        "/explicit.toml"
    )
    assert find_config_file("cli.toml", {**env, "COCOD_CONFIG": "/x.toml"}) == Path("cli.toml")
    (tmp_path / "config.toml").unlink()
    (systemd_dir / "config.toml").unlink()
    (xdg_dir / "cocod" / "config.toml").unlink()
    assert find_config_file(None, env) is None


def test_metrics_embed_threads_and_auto_setup_are_read_and_off_by_default(tmp_path: Path) -> None:
    flows = '[flows.one]\ndefinition = "m:f"\nlive = false\n'
    plain = load_config(_config(tmp_path, flows), ENV)
    assert plain.metrics is None and plain.embed_threads is None
    assert plain.flows["one"].auto_setup is True
    text = (
        '[daemon]\nmetrics = "127.0.0.1:9464"\nembed_threads = 2\n\n'
        + flows
        + "auto_setup = false\n"
    )
    config = load_config(_config(tmp_path, text), ENV)
    assert config.metrics == MetricsAddress("127.0.0.1", 9464)
    assert config.embed_threads == 2
    assert config.flows["one"].auto_setup is False
    assert config.flows["one"].identity() != plain.flows["one"].identity()  # reload restarts
    assert load_config(_config(tmp_path, '[daemon]\nmetrics = ":0"\n'), ENV).metrics == (
        MetricsAddress("127.0.0.1", 0)
    )
    v6 = load_config(_config(tmp_path, '[daemon]\nmetrics = "[::1]:9464"\n'), ENV).metrics
    assert v6 == MetricsAddress("::1", 9464) and str(v6) == "[::1]:9464"
    with pytest.raises(SettingsError, match="auto_setup: expected true or false"):
        load_config(_config(tmp_path, flows + 'auto_setup = "no"\n'), ENV)


def test_builtin_instances_get_a_safe_table_name_and_a_checked_folder(tmp_path: Path) -> None:
    assert table_name_for("notes") == "notes__chunks"
    assert table_name_for("My-Repo.v2") == "my_repo_v2__chunks"
    assert table_name_for("2024") == "t_2024__chunks"
    assert len(table_name_for("x" * 200).encode()) <= 63
    config = builtin_instance("myrepo", tmp_path, "code")
    assert config.definition == "cocod.flows:code"
    assert config.params == {"path": str(tmp_path), "table": "myrepo__chunks"}
    assert builtin_instance("notes", tmp_path, "text", live=False).definition == (
        "cocod.flows:text"
    )
    for args, words in (
        (("bad name", tmp_path, "code"), "flow"),
        (("ok", tmp_path, "rust"), "unknown built-in flow 'rust'"),
        (("ok", tmp_path / "missing", "code"), "is not a folder"),
        (("ok", "relative/dir", "code"), "must be absolute"),
    ):
        with pytest.raises(ProtocolError, match=words):
            builtin_instance(*args)  # type: ignore[arg-type]


def test_the_user_unit_runs_in_the_background_cpu_budget() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "user" / "cocod.service").read_text()
    lines = {line.strip() for line in unit.splitlines()}
    assert {"Nice=10", "CPUWeight=20", "IOSchedulingClass=idle"} <= lines
