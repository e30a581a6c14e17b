"""The PostgreSQL databases of a config in `hitl backup` / `hitl restore`: `pg_dump` (custom format) and
`pg_restore`, checked like the SQLite databases (a SHA-256 per dump in the manifest) and restored all or none.

Which databases: with `stack.database_url`, the Prefect, MLflow and review databases (`<project>_<role>`);
a `review.store_url` on PostgreSQL is the review one. `pg_dump` takes one consistent snapshot per database.

Versions: `pg_dump` refuses a server newer than itself, and a dump is not guaranteed to load into an older
server or to be read by an older `pg_restore`. Each is checked before anything is written or changed, and
the message names the versions and the client package to install.

A restore loads every dump into a new database (`<name>_restoring_<stamp>`) first; only when all loaded are
they renamed into place, so a failed restore changes nothing. A database already holding tables is refused
unless told to replace it; it is then renamed `<name>_replaced_<stamp>` and kept.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from hitl.config import Config
from hitl.hashing import file_sha256

DUMP_DIR = "postgres"  # in the archive, beside state/
CLIENT_HINT = "install the PostgreSQL client tools of that version or newer (Debian/Ubuntu: postgresql-client-{v})"


class PgDumpError(RuntimeError):
    """A PostgreSQL backup or restore that cannot be done; the message says why and what to do."""


def databases(cfg: Config) -> dict[str, str]:
    """role -> SQLAlchemy URL (psycopg2) of each of the config's databases on PostgreSQL."""
    from sqlalchemy.engine import make_url

    out = {}
    if cfg.stack.database_url:
        out = {role: cfg.postgres_url(role, "postgresql+psycopg2") for role in ("prefect", "mlflow")}
    if cfg.store_url.startswith(("postgresql", "postgres://")):
        url = make_url(cfg.store_url.replace("postgres://", "postgresql://", 1))
        out["review"] = url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return out


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment that carries it (not argv)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return u.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _tool(name: str) -> tuple[str, int]:
    """Path and major version of a PostgreSQL client tool on PATH."""
    path = shutil.which(name)
    if path is None:
        raise PgDumpError(f"{name} is not installed (not on PATH): the PostgreSQL databases need it. Install the "
                          f"PostgreSQL client tools (Debian/Ubuntu: postgresql-client), then run the command again; "
                          f"nothing was written or changed")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"\)\s+(\d+)", out)
    if not m:
        raise PgDumpError(f"{path} --version printed {out.strip()!r}, not a PostgreSQL version")
    return path, int(m.group(1))


def _admin(url: str):
    """An AUTOCOMMIT engine on the server's `postgres` database (to create, rename and inspect databases)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT",
                         connect_args={"connect_timeout": 10})


def _server(url: str) -> tuple[str, int]:
    """The server's version (e.g. "15.18") and major version."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from hitl.ops.databases import safe

    engine = _admin(url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            num = int(conn.execute(text("SHOW server_version_num")).scalar_one())
    except SQLAlchemyError as e:
        why = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise PgDumpError(f"Cannot reach the PostgreSQL server of {safe(url)}: {why}") from e
    finally:
        engine.dispose()
    return str(version).split()[0], num // 10000



def dump(cfg: Config, into: Path) -> list[dict]:
    """pg_dump each database of the config into `into/postgres/<role>.dump`; returns their manifest entries."""
    from sqlalchemy.engine import make_url

    dbs = databases(cfg)
    if not dbs:
        return []
    pg_dump, client = _tool("pg_dump")
    (into / DUMP_DIR).mkdir(parents=True, exist_ok=True)
    entries = []
    for role, url in dbs.items():
        version, major = _server(url)
        if client < major:
            raise PgDumpError(f"pg_dump {client} cannot dump the PostgreSQL {version} server of the {role} database "
                              f"(it refuses newer servers): {CLIENT_HINT.format(v=major)}; nothing was written")
        rel = f"{DUMP_DIR}/{role}.dump"
        conn, env = _libpq(url)
        p = subprocess.run([pg_dump, "--format=custom", "--file", str(into / rel), "--dbname", conn],
                           capture_output=True, text=True, env=env, timeout=3600)
        if p.returncode != 0:
            raise PgDumpError(f"pg_dump of the {role} database {make_url(url).database} failed: "
                              f"{_last_lines(p.stderr)}; nothing was written")
        entries.append({"role": role, "database": make_url(url).database, "path": rel,
                        "sha256": file_sha256(into / rel), "server_version": version, "pg_dump_major": client})
    return entries


def check(cfg: Config, entries: list[dict], root: Path, archive: Path) -> None:
    """Before a restore changes anything: every dump matches its SHA-256 and is a readable archive, the config
    keeps the same roles on PostgreSQL, and the tools and the target server are recent enough."""
    dbs = databases(cfg)
    dumped = {e["role"] for e in entries}
    if dumped - set(dbs):
        raise PgDumpError(f"{archive} holds PostgreSQL databases ({', '.join(sorted(dumped))}) but this config "
                          f"keeps {', '.join(sorted(dumped - set(dbs)))} elsewhere: set stack.database_url (or "
                          f"review.store_url) to the PostgreSQL server to restore into")
    if set(dbs) - dumped:
        raise PgDumpError(f"{archive} holds no dump of the {', '.join(sorted(set(dbs) - dumped))} database(s) this "
                          f"config keeps on PostgreSQL (it was made from a config on SQLite files, or before hitl "
                          f"backup dumped PostgreSQL): restore it with a config on SQLite files")
    if not entries:
        return
    pg_restore, client = _tool("pg_restore")
    for e in entries:
        path = root / e["path"]
        if not path.is_file() or file_sha256(path) != e["sha256"]:
            raise PgDumpError(f"{e['path']} in {archive} does not match its manifest: the archive is damaged")
        if client < e["pg_dump_major"]:
            raise PgDumpError(f"{e['path']} was written by pg_dump {e['pg_dump_major']}, which pg_restore {client} "
                              f"cannot read: {CLIENT_HINT.format(v=e['pg_dump_major'])}")
        listed = subprocess.run([pg_restore, "--list", str(path)], capture_output=True, text=True, timeout=300)
        if listed.returncode != 0:
            raise PgDumpError(f"{e['path']} in {archive} is not a readable pg_dump archive: "
                              f"{_last_lines(listed.stderr)}")
        target, major = _server(dbs[e["role"]])
        if major < int(e["server_version"].split(".")[0]):
            raise PgDumpError(f"the {e['role']} database was dumped from PostgreSQL {e['server_version']}; the target "
                              f"server is {target}, older, and a dump is not guaranteed to load into an older server: "
                              f"restore into PostgreSQL {e['server_version'].split('.')[0]} or newer")


def holding_data(cfg: Config, entries: list[dict]) -> list[str]:
    """Target databases of the restore that exist and hold tables."""
    dbs = databases(cfg)
    return [_name(dbs[e["role"]]) for e in entries if _tables(dbs[e["role"]])]


def restore(cfg: Config, entries: list[dict], root: Path, stamp: str) -> list[str]:
    """Load every dump into a new database, then rename them all into place (a database holding data is
    renamed aside, an empty one dropped); on any failure the new databases are dropped and nothing changes.
    Returns what was moved aside. Call `check` first, and refuse data the user did not ask to replace."""
    from sqlalchemy.engine import make_url

    dbs = databases(cfg)
    pg_restore, _ = _tool("pg_restore")
    loaded: list[tuple[str, str]] = []  # (role url, temporary name)
    try:
        for e in entries:
            url = dbs[e["role"]]
            tmp = f"{_name(url)[:40]}_restoring_{stamp}"
            _execute(url, f'CREATE DATABASE "{tmp}" TEMPLATE template0')
            loaded.append((url, tmp))
            conn, env = _libpq(make_url(url).set(database=tmp).render_as_string(hide_password=False))
            p = subprocess.run([pg_restore, "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", conn,
                                str(root / e["path"])], capture_output=True, text=True, env=env, timeout=3600)
            if p.returncode != 0:
                raise PgDumpError(f"pg_restore of the {e['role']} database into {_name(url)} failed: "
                                  f"{_last_lines(p.stderr)}; nothing was changed")
    except BaseException:
        for url, tmp in loaded:
            _execute(url, f'DROP DATABASE IF EXISTS "{tmp}" WITH (FORCE)')
        raise
    aside = []
    for url, tmp in loaded:
        name = _name(url)
        if _tables(url):
            _execute(url, f'ALTER DATABASE "{name}" RENAME TO "{name[:40]}_replaced_{stamp}"')
            aside.append(f"{name[:40]}_replaced_{stamp}")
        else:
            _execute(url, f'DROP DATABASE IF EXISTS "{name}"')
        _execute(url, f'ALTER DATABASE "{tmp}" RENAME TO "{name}"')
    return aside


def _name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database)


def _execute(url: str, sql: str) -> None:
    from sqlalchemy import text

    engine = _admin(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _tables(url: str) -> int:
    """How many tables database `url` holds (0 when it does not exist)."""
    from sqlalchemy import create_engine, text

    engine = _admin(url)
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": _name(url)}).first():
                return 0
    finally:
        engine.dispose()
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM information_schema.tables WHERE table_schema "
                                         "NOT IN ('pg_catalog', 'information_schema')")).scalar_one())
    finally:
        engine.dispose()


def _last_lines(stderr: str, n: int = 3) -> str:
    return " / ".join(line.strip() for line in stderr.strip().splitlines()[-n:]) or "no output"
