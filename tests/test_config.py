"""Configuration: defaults, TOML, DRIVE_* env, CLI overrides, and one clear line per bad value."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from driveserver.config import SETTINGS, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_need_no_file(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={"data_dir": tmp_path})
    assert cfg.port == 8080 and cfg.backend == "local" and not cfg.registration_open
    assert cfg.database_path == tmp_path / "meta.sqlite3"
    assert cfg.blocks_dir == tmp_path / "blocks"
    assert cfg.master_key_file == tmp_path / "secrets" / "master.key"


def test_precedence_file_then_env_then_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[limits]\ndefault_quota_bytes = 5\n')
    cfg = load_config(f, env={"DRIVE_SERVER_PORT": "9100"}, overrides={"port": 9200})
    assert (cfg.port, cfg.host, cfg.default_quota_bytes) == (9200, "0.0.0.0", 5)
    cfg = load_config(f, env={"DRIVE_SERVER_PORT": "9100"})
    assert cfg.port == 9100


@pytest.mark.parametrize("env, fragment", [
    ({"DRIVE_SERVER_PORT": "eighty"}, "server.port (env DRIVE_SERVER_PORT): expected int"),
    ({"DRIVE_SERVER_PORT": "70000"}, "server.port (env DRIVE_SERVER_PORT): must be between"),
    ({"DRIVE_STORAGE_BACKEND": "ftp"}, "storage.backend (env DRIVE_STORAGE_BACKEND): must be one of"),
    ({"DRIVE_ACCOUNTS_REGISTRATION_OPEN": "maybe"}, "accounts.registration_open"),
    ({"DRIVE_LIMITS_DEFAULT_QUOTA_BYTES": "-1"}, "limits.default_quota_bytes"),
    ({"DRIVE_STORAGE_BACKEND": "s3"}, "storage.s3.bucket: required"),
])
def test_bad_env_value_names_the_setting(env: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, env=env)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_bad_file_values(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = true\n")
    with pytest.raises(ConfigError, match="server.port"):
        load_config(f, env={})
    f.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting server.prot"):
        load_config(f, env={})
    f.write_text("[server\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(f, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_example_config_documents_every_setting_and_loads(tmp_path: Path) -> None:
    example = ROOT / "config.example.toml"
    text = example.read_text()
    # Every setting appears (commented or not) under its section.
    for s in SETTINGS:
        section = re.search(rf"^\[{re.escape(s.section)}\]$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        assert section, f"[{s.section}] missing from config.example.toml"
        assert re.search(rf"^#?\s*{s.key}\s*=", section.group(1), re.M), s.dotted
        assert s.env in text, f"{s.env} not mentioned in config.example.toml"
    # And the uncommented file is valid as it stands.
    tomllib.loads(text)
    load_config(example, env={})
