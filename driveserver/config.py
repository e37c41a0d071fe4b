"""Server configuration: one table of settings, read from TOML, then ``DRIVE_*`` env, then CLI flags.

Every setting is declared once in :data:`SETTINGS` with its TOML location, environment variable,
type, default and check. That single table drives loading, validation, error messages and the
test that keeps ``config.example.toml`` complete, so a setting cannot be added in one place and
forgotten in another.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

GiB = 1024**3


class ConfigError(Exception):
    """A setting has a bad value; the message names the setting and is shown as one line."""


@dataclass(frozen=True)
class Setting:
    attr: str
    section: str
    key: str
    kind: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def env(self) -> str:
        return f"DRIVE_{self.section.replace('.', '_').upper()}_{self.key.upper()}"

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be between 0 and 65535"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _database_url(v: str) -> str | None:
    ok = v == "" or v.startswith(("postgresql://", "postgres://"))
    return None if ok else "must be empty (SQLite) or a postgresql:// URL"


def _networks(v: str) -> str | None:
    from .forwarded import parse_networks

    try:
        parse_networks(v)
    except ValueError as exc:
        return str(exc)
    return None


def _at_least_one(v: int) -> str | None:
    return None if v >= 1 else "must be 1 or more"


def _password_hash_cost(v: int) -> str | None:
    # 17: 128 MiB per hash, the most scrypt may use here (auth._scrypt's maxmem is 256 MiB).
    return None if 10 <= v <= 17 else "must be from 10 to 17 (log2 of scrypt's N)"


def _metrics_token(v: str) -> str | None:
    # Nothing throttles guesses at /metrics, so a short token would be found by trying.
    return None if v == "" or len(v) >= 16 else "must be empty (metrics off) or at least 16 characters"


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "server", "host", str, "127.0.0.1", "Address to listen on."),
    Setting("port", "server", "port", int, 8080, "TCP port to listen on (0 picks a free one).", _port),
    Setting("public_url", "server", "public_url", str, "", "URL clients use to reach the server; empty means http://host:port."),
    Setting("trusted_proxies", "server", "trusted_proxies", str, "",
            "Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For"
            " names the client (e.g. \"127.0.0.1\" for nginx on this machine); empty trusts"
            " none.", _networks),
    Setting("log_level", "server", "log_level", str, "INFO", "Log level.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    Setting("data_dir", "storage", "data_dir", Path, Path("drive-data"),
            "Folder for the database, local blocks and secrets; created on first start."),
    Setting("database_path", "storage", "database_path", Path, None,
            "SQLite metadata database; default <data_dir>/meta.sqlite3."),
    Setting("database_url", "database", "url", str, "",
            "PostgreSQL metadata database, postgresql://user:password@host:port/name (needs"
            " the postgres extra: pip install '.[server,postgres]'); empty means SQLite at"
            " storage.database_path.", _database_url),
    Setting("secrets_dir", "storage", "secrets_dir", Path, None,
            "Folder (mode 0700) for the session signing key; default <data_dir>/secrets."),
    Setting("master_key_file", "storage", "master_key_file", Path, None,
            "Block encryption master key file (mode 0600); default <data_dir>/secrets/master.key. "
            "Keep a backup: without it the blocks cannot be read."),
    Setting("backend", "storage", "backend", str, "local", "Block store: local or s3.",
            choices=("local", "s3")),
    Setting("blocks_dir", "storage", "blocks_dir", Path, None,
            "Folder of the local block store; default <data_dir>/blocks."),
    Setting("cold_after_days", "storage", "cold_after_days", float, 30.0,
            "Blocks referenced only by versions older than this move to the cold tier.", _positive),
    Setting("s3_endpoint_url", "storage.s3", "endpoint_url", str, "",
            "S3 endpoint URL; empty means AWS."),
    Setting("s3_bucket", "storage.s3", "bucket", str, "", "S3 bucket (required when backend = s3)."),
    Setting("s3_region", "storage.s3", "region", str, "us-east-1", "S3 region."),
    Setting("s3_access_key_id", "storage.s3", "access_key_id", str, "",
            "Access key; empty means the usual AWS variables or profile."),
    Setting("s3_secret_access_key", "storage.s3", "secret_access_key", str, "",
            "Secret key; empty means the usual AWS variables or profile."),
    Setting("s3_prefix", "storage.s3", "prefix", str, "blocks/", "Key prefix of hot blocks."),
    Setting("s3_cold_prefix", "storage.s3", "cold_prefix", str, "cold/", "Key prefix of cold blocks."),
    Setting("s3_cold_bucket", "storage.s3", "cold_bucket", str, "",
            "Bucket of cold blocks; empty means the same bucket."),
    Setting("s3_cold_storage_class", "storage.s3", "cold_storage_class", str, "",
            "Storage class of cold blocks, e.g. GLACIER_IR; empty means the bucket default."),
    Setting("s3_max_attempts", "storage.s3", "max_attempts", int, 5,
            "Tries per S3 call, the first included, with exponential back-off between them (a"
            " store that cannot be reached answers 503 after the last one).", _at_least_one),
    Setting("s3_read_timeout_seconds", "storage.s3", "read_timeout_seconds", float, 60.0,
            "How long one S3 try may wait for the store's answer before it counts as failed (a"
            " hung storage node holds a request this long times max_attempts).", _positive),
    Setting("default_quota_bytes", "limits", "default_quota_bytes", int, 10 * GiB,
            "Quota of a new user, in bytes.", _positive),
    Setting("max_file_bytes", "limits", "max_file_bytes", int, 64 * GiB,
            "Largest file one upload may carry, in bytes.", _positive),
    Setting("max_json_bytes", "limits", "max_json_bytes", int, 8 * 1024 * 1024,
            "Largest JSON request body, in bytes.", _positive),
    Setting("upload_token_seconds", "limits", "upload_token_seconds", int, 6 * 3600,
            "Lifetime of an upload token, in seconds.", _positive),
    Setting("download_token_seconds", "limits", "download_token_seconds", int, 3600,
            "Lifetime of a block download token, in seconds.", _positive),
    Setting("session_days", "limits", "session_days", float, 90.0,
            "Lifetime of a login session, in days.", _positive),
    Setting("unauthenticated_body_bytes", "limits", "unauthenticated_body_bytes", int, 64 * 1024,
            "Largest body of a request that no session or block grant vouches for (login,"
            " registration, link unlock), in bytes.", _positive),
    Setting("header_timeout_seconds", "limits", "header_timeout_seconds", float, 60.0,
            "A connection must deliver a complete request head (request line and headers) within"
            " this many seconds of opening or of its previous response, or it is closed; so an"
            " idle keep-alive connection is closed after it too.", _positive),
    Setting("body_timeout_seconds", "limits", "body_timeout_seconds", float, 60.0,
            "While a handler waits for a request body, every window this long must bring at least"
            " body_min_bytes_per_second times its length in bytes, or the connection is dropped"
            " (time the server itself holds reading does not count).", _positive),
    Setting("body_min_bytes_per_second", "limits", "body_min_bytes_per_second", int, 1024,
            "The floor rate of a request body, in bytes per second (0: any byte in each window"
            " will do).", _non_negative),
    Setting("max_connections_per_client", "limits", "max_connections_per_client", int, 256,
            "Open connections one client address (an IPv6 /64) may hold; more are refused with"
            " 503 (0 = no cap; behind a reverse proxy every client is the proxy).", _non_negative),
    Setting("max_connections", "limits", "max_connections", int, 0,
            "Open connections in all; more are refused with 503 (0 = the open-file limit minus"
            " a reserve for the database, block files and S3).", _non_negative),
    Setting("longpoll_default_seconds", "sync", "longpoll_default_seconds", float, 30.0,
            "Long-poll wait when the client names none.", _positive),
    Setting("longpoll_max_seconds", "sync", "longpoll_max_seconds", float, 120.0,
            "Upper bound of a long-poll wait.", _positive),
    Setting("journal_retention_days", "sync", "journal_retention_days", float, 60.0,
            "Change journal entries older than this are pruned; older cursors get a reset.", _positive),
    Setting("keep_versions", "versions", "keep_versions", int, 100,
            "Versions kept per file (0 = unlimited).", _non_negative),
    Setting("keep_days", "versions", "keep_days", float, 0.0,
            "Older versions than this are pruned (0 = forever); the current version is always kept.",
            _non_negative),
    Setting("gc_grace_days", "versions", "gc_grace_days", float, 7.0,
            "Unreferenced blocks younger than this are kept (an upload may still need them).",
            _non_negative),
    Setting("gc_interval_seconds", "versions", "gc_interval_seconds", float, 6 * 3600.0,
            "How often the server collects garbage by itself (0 = never).", _non_negative),
    Setting("registration_open", "accounts", "registration_open", bool, False,
            "Whether anyone may create an account with POST /api/auth/register (off on a fresh"
            " install: the first user comes from `drive-server user add`; open it only where"
            " anyone may have an account, and know that addresses are not verified)."),
    Setting("password_hash_cost", "accounts", "password_hash_cost", int, 14,
            "log2 of scrypt's N for passwords hashed from now on, 10 to 17 (14: 16 MiB and ~50 ms"
            " of CPU per hash or check; each step up doubles both). Each hash keeps its own cost, so raising it later applies to"
            " passwords set after that. Below 14 only for tests: the server warns at start.",
            _password_hash_cost),
    Setting("dav_allow_account_password", "dav", "allow_account_password", bool, False,
            "Whether WebDAV (/dav/) accepts the account password itself over HTTP Basic, as well"
            " as app passwords (off: a client that stores a password should hold one that can be"
            " revoked alone)."),
    Setting("metrics_token", "metrics", "token", str, "",
            "Bearer token that GET /metrics requires; empty turns /metrics off (the default)."
            " At least 16 characters.", _metrics_token),
)


@dataclass(frozen=True)
class Config:
    """Validated settings; paths are absolute. Build it with :func:`load_config`."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    trusted_proxies: str = ""
    log_level: str = "INFO"
    data_dir: Path = Path("drive-data")
    database_path: Path = Path()
    database_url: str = field(default="", repr=False)  # may hold a password
    secrets_dir: Path = Path()
    master_key_file: Path = Path()
    backend: str = "local"
    blocks_dir: Path = Path()
    cold_after_days: float = 30.0
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)
    s3_prefix: str = "blocks/"
    s3_cold_prefix: str = "cold/"
    s3_cold_bucket: str = ""
    s3_cold_storage_class: str = ""
    s3_max_attempts: int = 5
    s3_read_timeout_seconds: float = 60.0
    default_quota_bytes: int = 10 * GiB
    max_file_bytes: int = 64 * GiB
    max_json_bytes: int = 8 * 1024 * 1024
    upload_token_seconds: int = 6 * 3600
    download_token_seconds: int = 3600
    session_days: float = 90.0
    longpoll_default_seconds: float = 30.0
    longpoll_max_seconds: float = 120.0
    journal_retention_days: float = 60.0
    keep_versions: int = 100
    keep_days: float = 0.0
    gc_grace_days: float = 7.0
    gc_interval_seconds: float = 6 * 3600.0
    registration_open: bool = False
    password_hash_cost: int = 14
    unauthenticated_body_bytes: int = 64 * 1024
    header_timeout_seconds: float = 60.0
    body_timeout_seconds: float = 60.0
    body_min_bytes_per_second: int = 1024
    max_connections_per_client: int = 256
    max_connections: int = 0
    dav_allow_account_password: bool = False
    metrics_token: str = field(default="", repr=False)


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    where = f"{setting.dotted} ({source})"
    kind = setting.kind
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value: Any = raw
            elif isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(raw, bool) or isinstance(raw, float):
                raise ValueError
            value = int(raw)
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        elif kind is Path:
            if not isinstance(raw, str) or not raw:
                raise ValueError
            value = Path(raw).expanduser()
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {raw!r}") from None
    if setting.choices is not None:
        value = value.upper() if setting.attr == "log_level" else value.lower()
        if value not in setting.choices:
            raise ConfigError(f"{where}: must be one of {', '.join(setting.choices)}, got {raw!r}")
    if setting.check is not None:
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{where}: {problem}, got {raw!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def _lookup(doc: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _unknown_keys(doc: Mapping[str, Any]) -> list[str]:
    known_sections = {s.section for s in SETTINGS}
    known = {s.dotted for s in SETTINGS}
    bad: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, Mapping) and (name in known_sections or any(
                    s.startswith(name + ".") for s in known_sections)):
                walk(v, name)
            elif name not in known:
                bad.append(name)

    walk(doc, "")
    return bad


def load_config(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults < TOML file < ``DRIVE_*`` environment < CLI overrides, and validate.

    Unknown keys in the file are an error rather than silently ignored: a typo in a quota or a
    bucket name should stop the server, not run it with a default the owner did not choose.
    """
    env = os.environ if env is None else env
    doc = _read_toml(config_file) if config_file else {}
    unknown = _unknown_keys(doc)
    if unknown:
        raise ConfigError(f"config file {config_file}: unknown setting {unknown[0]}")
    values: dict[str, Any] = {}
    for s in SETTINGS:
        value = s.default
        found, raw = _lookup(doc, s.dotted)
        if found:
            value = _coerce(s, raw, f"in {config_file}")
        if s.env in env and env[s.env] != "":
            value = _coerce(s, env[s.env], f"env {s.env}")
        if overrides and overrides.get(s.attr) is not None:
            value = _coerce(s, overrides[s.attr] if s.kind is not Path else str(overrides[s.attr]),
                            "command line")
        values[s.attr] = value
    data_dir = Path(values["data_dir"]).resolve()
    values["data_dir"] = data_dir
    values["database_path"] = Path(values["database_path"] or data_dir / "meta.sqlite3").resolve()
    values["secrets_dir"] = Path(values["secrets_dir"] or data_dir / "secrets").resolve()
    values["master_key_file"] = Path(
        values["master_key_file"] or values["secrets_dir"] / "master.key").resolve()
    values["blocks_dir"] = Path(values["blocks_dir"] or data_dir / "blocks").resolve()
    if values["backend"] == "s3" and not values["s3_bucket"]:
        raise ConfigError("storage.s3.bucket: required when storage.backend = s3")
    if values["longpoll_default_seconds"] > values["longpoll_max_seconds"]:
        raise ConfigError("sync.longpoll_default_seconds: must not exceed sync.longpoll_max_seconds")
    names = {f.name for f in fields(Config)}
    assert names == set(values), names ^ set(values)
    return Config(**values)
