"""``drive-server``: serve, manage users, check the installation.

Every subcommand takes ``--config FILE`` and ``--data-dir DIR``, so administration commands work
on the same data directory as a running ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load_config
from .errors import ApiError

EXIT_CONFIG = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (see config.example.toml)")
    p.add_argument("--data-dir", type=Path, help="data directory (default ./drive-data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drive-server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server in the foreground")
    _common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080; 0 = any free port)")
    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user")
    _common(add)
    add.add_argument("email")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of prompting")
    lst = user_sub.add_parser("list", help="list users")
    _common(lst)
    quota = user_sub.add_parser("quota", help="set a user's quota (e.g. 50G, 500M, 1T)")
    _common(quota)
    quota.add_argument("email")
    quota.add_argument("size")
    app = sub.add_parser("app-password",
                         help="manage a user's app passwords (HTTP Basic on /dav/)")
    app_sub = app.add_subparsers(dest="app_command", required=True)
    create = app_sub.add_parser("create", help="make an app password (printed once)")
    _common(create)
    create.add_argument("email")
    create.add_argument("name", help="what it is for, e.g. 'phone' or 'rclone'")
    app_list = app_sub.add_parser("list", help="list a user's app passwords")
    _common(app_list)
    app_list.add_argument("email")
    revoke = app_sub.add_parser("revoke", help="revoke an app password by its id")
    _common(revoke)
    revoke.add_argument("email")
    revoke.add_argument("app_password_id")
    check = sub.add_parser("check", help="validate config, database schema and block storage")
    _common(check)
    gc = sub.add_parser("gc", help="delete unreferenced blocks older than the grace period")
    _common(gc)
    to_pg = sub.add_parser("migrate-to-postgres",
                           help="copy the SQLite metadata into an empty PostgreSQL database"
                                " and check that every file and version is the same")
    _common(to_pg)
    to_pg.add_argument("--to", metavar="URL",
                       help="the target, postgresql://user@host:port/database (a password"
                            " here shows in the process list: prefer DRIVE_MIGRATE_TO_URL or"
                            " ~/.pgpass)")
    return parser


def parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 10G or 500M)") from None
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value)


def _load(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {"data_dir": getattr(args, "data_dir", None),
                                 "host": getattr(args, "host", None),
                                 "port": getattr(args, "port", None)}
    return load_config(args.config, overrides=overrides)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise SystemExit("passwords differ")
    return first


async def _with_db(config: Config, fn: Any) -> Any:
    from .app import prepare_data_dir
    from .meta.backend import open_database

    prepare_data_dir(config)
    db = open_database(config.database_url, config.database_path)
    await db.open()
    try:
        return await fn(db)
    finally:
        await db.close()


async def _user_add(config: Config, email: str, password: str) -> str:
    from .auth import MIN_PASSWORD_CHARS
    from .meta.accounts import create_user

    if len(password) < MIN_PASSWORD_CHARS:
        raise SystemExit(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if "@" not in email:
        raise SystemExit(f"not an email address: {email}")
    row = await _with_db(config, lambda db: create_user(db, email, password,
                                                        config.default_quota_bytes,
                                                        config.password_hash_cost))
    return str(row["id"])


async def _user_list(config: Config) -> list[Any]:
    from .meta.accounts import all_users, used_bytes

    async def run(db: Any) -> list[Any]:
        rows = await all_users(db)
        return [(r["email"], r["id"], await used_bytes(db, r["id"]), r["quota_bytes"])
                for r in rows]

    result: list[Any] = await _with_db(config, run)
    return result


async def _user_quota(config: Config, email: str, size: int) -> None:
    from .meta.accounts import set_quota, user_by_email

    async def run(db: Any) -> None:
        user = await user_by_email(db, email)
        if user is None:
            raise SystemExit(f"no such user: {email}")
        await db.write(lambda tx: set_quota(tx, user["id"], size))

    await _with_db(config, run)


async def _app_password(config: Config, args: argparse.Namespace) -> list[str]:
    """``drive-server app-password create|list|revoke``: the same units of work as
    ``/api/app-passwords``."""
    from .meta import app_passwords
    from .meta.accounts import user_by_email

    async def run(db: Any) -> list[str]:
        user = await user_by_email(db, args.email)
        if user is None:
            raise SystemExit(f"no such user: {args.email}")
        if args.app_command == "create":
            row, password = await app_passwords.issue_app_password(
                db, user["id"], args.name, config.password_hash_cost)
            return [f"app password {row['id']} ({row['name']}) for {user['email']}:",
                    password, "(shown this once; use it with the email as the user name)"]
        if args.app_command == "list":
            return [f"{r['id']}\t{r['name']}\tcreated {r['created_at']:.0f}"
                    f"\tlast used {r['last_used_at'] or 0:.0f}"
                    for r in await app_passwords.live_app_passwords(db, user["id"])]
        await db.write(lambda tx: app_passwords.revoke_app_password(tx, user["id"],
                                                                    args.app_password_id))
        return [f"revoked app password {args.app_password_id}"]

    result: list[str] = await _with_db(config, run)
    return result


async def _check(config: Config) -> list[str]:
    from .meta.backend import open_database

    report = [f"config ok (data dir {config.data_dir}, storage {config.backend})"]
    db = open_database(config.database_url, config.database_path)
    await db.open()
    try:
        from .meta.integrity import misplaced_items

        misplaced = await misplaced_items(db)
        if misplaced:
            raise SystemExit("database: items in the wrong workspace:\n  " +
                             "\n  ".join(misplaced))
        report.append(f"database ok ({db.path}, schema {await db.schema_version()})")
    finally:
        await db.close()
    from .app import open_storage

    store, keyring = await open_storage(config)
    try:
        await store.check()
        report.append(f"block storage ok ({config.backend}); master key {keyring.active_key_id}")
    finally:
        await store.close()
    return report


async def _migrate_to_postgres(config: Config, url: str) -> list[str]:
    from .app import prepare_data_dir
    from .meta.db import Database
    from .meta.migrations import MIGRATIONS
    from .meta.pg import PgDatabase, _safe_url
    from .meta.to_postgres import MigrationError, migrate

    if config.database_url:
        raise SystemExit("drive-server: database.url already names PostgreSQL; this command"
                         " copies a SQLite installation (leave database.url empty for it)")
    if not url.startswith(("postgresql://", "postgres://")):
        raise SystemExit("drive-server: --to must be a postgresql:// URL")
    if not config.database_path.exists():
        raise SystemExit(f"drive-server: no SQLite database at {config.database_path}")
    prepare_data_dir(config)
    for db in (Database(config.database_path), PgDatabase(url)):  # both at the latest schema
        await db.open()
        await db.close()
    try:
        counts = await migrate(config.database_path, url, len(MIGRATIONS))
    except MigrationError as exc:
        raise SystemExit(f"drive-server: migration failed, nothing was committed: {exc}") \
            from None
    return [f"copied {config.database_path} to {_safe_url(url)}: "
            + ", ".join(f"{n} {t}" for t, n in counts.items() if n),
            f"checked: all {counts.get('files', 0)} files and {counts.get('file_versions', 0)}"
            " versions (checksums, sizes, blocks, trash) are the same on both",
            f'next: stop using the SQLite file; set [database] url = "{_safe_url(url)}"'
            " (with its password) in the config file, or DRIVE_DATABASE_URL, and start the"
            " server"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"drive-server: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            from .app import serve
            asyncio.run(serve(config))
        elif args.command == "user" and args.user_command == "add":
            user_id = asyncio.run(_user_add(config, args.email, _read_password(args)))
            print(f"created user {args.email} ({user_id})")
        elif args.command == "user" and args.user_command == "list":
            for email, user_id, used, quota in asyncio.run(_user_list(config)):
                print(f"{email}\t{user_id}\t{used}/{quota} bytes")
        elif args.command == "user" and args.user_command == "quota":
            try:
                size = parse_size(args.size)
            except ValueError as exc:
                print(f"drive-server: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            asyncio.run(_user_quota(config, args.email, size))
            print(f"quota of {args.email} set to {size} bytes")
        elif args.command == "app-password":
            for line in asyncio.run(_app_password(config, args)):
                print(line)
        elif args.command == "check":
            for line in asyncio.run(_check(config)):
                print(line)
        elif args.command == "gc":
            from .app import run_gc_once
            print(asyncio.run(run_gc_once(config)))
        elif args.command == "migrate-to-postgres":
            target = args.to or os.environ.get("DRIVE_MIGRATE_TO_URL", "")
            if not target:
                print("drive-server: give the target as --to URL or DRIVE_MIGRATE_TO_URL",
                      file=sys.stderr)
                return EXIT_CONFIG
            for line in asyncio.run(_migrate_to_postgres(config, target)):
                print(line)
    except ApiError as exc:
        print(f"drive-server: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:  # a laptop's client-only install (pip install .)
        print(f"drive-server: the server's libraries are not installed (no module {exc.name!r});"
              " install them with: pip install 'drive[server]' (from a checkout: pip install"
              " '.[server]')", file=sys.stderr)
        return 1
    except Exception as exc:  # one clear line, not a traceback, for operational failures
        logging.getLogger("driveserver").debug("failure", exc_info=True)
        print(f"drive-server: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
