"""Back up the state dir into one archive, and restore it into a fresh one (`hitl backup`, `hitl restore`).

Every SQLite database under the state dir (the review store, Prefect's and MLflow's databases, MLflow's
user store) is copied with SQLite's online backup API: a consistent snapshot even while the servers run.
Then the other files: MLflow's artifacts, Prefect's persisted results, the world or scenario data, reports,
quarantine, the audit key and head. Left out: logs, pid files, Trainer checkpoints and the embedding cache
(rebuilt on demand). Databases on a PostgreSQL server (`stack.database_url`, `review.store_url`) are dumped
with `pg_dump` (custom format) into the archive and restored with `pg_restore` (hitl/ops/pgdump.py).

For one point in time across the databases, back up while no flow runs (the servers may run): a version
registered between two snapshots would be in one database and not the other.

A restore refuses while a server or the worker of the target config runs, and refuses a state dir that
already holds data unless told to replace it (the old one is then moved aside, never deleted). It checks
each database's SHA-256 against the manifest and SQLite's integrity check before it moves the restored
state into place; a PostgreSQL dump, against its SHA-256 and `pg_restore --list`, and the databases are
loaded under new names and renamed into place only when all loaded.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hitl.config import Config
from hitl.hashing import file_sha256
from hitl.ops import pgdump

FORMAT = "hitl-backup/1"
MANIFEST = "manifest.json"
SKIP_DIRS = {"logs", "pids", "work", "cache"}  # relative to the state dir: transient or rebuilt
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")
SQLITE_MAGIC = b"SQLite format 3\x00"


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Summary:
    archive: Path
    databases: list[str]  # relative paths of the SQLite databases, then `postgres:<database>` for each dump
    files: int  # other files
    bytes: int  # size of the archive
    not_included: list[str]  # databases outside the state dir, with how to back them up
    seconds: float


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False



def _state_files(state: Path) -> list[Path]:
    """Files of the state dir worth keeping, relative to it."""
    out = []
    for p in sorted(state.rglob("*")):
        rel = p.relative_to(state)
        if rel.parts[0] in SKIP_DIRS or not p.is_file() or p.is_symlink() or p.name.endswith(SKIP_SUFFIXES):
            continue
        out.append(rel)
    return out


def external_databases(cfg: Config) -> list[str]:
    """Databases this config keeps outside the state dir (not in a backup), as `role: how to back it up`."""
    if cfg.store_url.startswith(("sqlite", "postgres")):
        return []
    return ["review store at review.store_url: back it up with that database's own tools"]


def backup(cfg: Config, archive: Path) -> Summary:
    """Write the state dir's databases (online SQLite backups) and files into `archive` (.tar.gz)."""
    t0 = time.monotonic()
    state = cfg.state
    if not state.is_dir():
        raise BackupError(f"No state dir at {state}: nothing to back up (is -c the right config?)")
    archive = archive.expanduser().resolve()
    if archive.is_relative_to(state):
        raise BackupError(f"Write the archive outside the state dir {state}, not to {archive}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    files = _state_files(state)
    dbs = [rel for rel in files if _is_sqlite(state / rel)]
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".hitl-backup-") as tmp:
        snap, manifest_dbs = Path(tmp), []
        for rel in dbs:  # databases first: any file they point at is copied after them
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            src = sqlite3.connect(state / rel, timeout=30)
            dst = sqlite3.connect(snap / rel)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            manifest_dbs.append({"path": str(rel), "sha256": file_sha256(snap / rel)})
        try:
            dumps = pgdump.dump(cfg, snap)
        except pgdump.PgDumpError as e:
            raise BackupError(str(e)) from e
        manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "project": cfg.project, "state_dir": str(state), "databases": manifest_dbs,
                    "postgres": dumps, "not_included": external_databases(cfg)}
        (snap / MANIFEST).write_text(json.dumps(manifest, indent=2))
        partial = archive.with_name(archive.name + ".partial")
        others = [rel for rel in files if rel not in set(dbs)]
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(snap / MANIFEST, arcname=MANIFEST)
            for rel in dbs:
                tar.add(snap / rel, arcname=f"state/{rel}")
            for d in dumps:
                tar.add(snap / d["path"], arcname=d["path"])
            for rel in others:
                if (state / rel).exists():  # a file may go while we copy (e.g. a temporary one)
                    tar.add(state / rel, arcname=f"state/{rel}")
        partial.replace(archive)
    return Summary(archive, [*map(str, dbs), *(f"postgres:{d['database']}" for d in dumps)], len(others),
                   archive.stat().st_size,
                   manifest["not_included"], time.monotonic() - t0)


def _running(cfg: Config) -> list[str]:
    from hitl.ops import stack

    return [f"{s.name} (pid {s.pid})" for s in stack.status(cfg) if s.pid is not None or s.healthy]


def restore(cfg: Config, archive: Path, replace: bool = False) -> dict:
    """Restore `archive` into the config's state dir; returns the manifest. See the module docstring."""
    archive = archive.expanduser().resolve()
    if not archive.is_file():
        raise BackupError(f"No backup archive at {archive}")
    running = _running(cfg)
    if running:
        raise BackupError(f"The stack of this config is running ({', '.join(running)}): stop it with "
                          f"`hitl down -c <config>` before restoring over its state")
    state = cfg.state
    holds_data = state.exists() and any(state.iterdir())
    if holds_data and not replace:
        raise BackupError(f"The state dir {state} already holds data: restore into a fresh one, or pass "
                          "--replace to move it aside (it is kept, renamed) and restore in its place")
    state.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(dir=state.parent, prefix=f".{state.name}.restoring-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BackupError(f"{archive} is not a readable backup archive: {e}") from e
        manifest_path = Path(tmp) / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{archive} is not a hitl backup ({FORMAT}); found {manifest.get('format')!r}")
        restored = Path(tmp) / "state"
        for db in manifest["databases"]:
            path = restored / db["path"]
            if not path.is_file() or file_sha256(path) != db["sha256"]:
                raise BackupError(f"{db['path']} in {archive} does not match its manifest: the archive is damaged")
            with sqlite3.connect(path) as conn:
                check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{db['path']} in {archive} fails SQLite's integrity check: {check}")
        dumps = manifest.get("postgres", [])
        try:
            pgdump.check(cfg, dumps, Path(tmp), archive)
            occupied = pgdump.holding_data(cfg, dumps)
            if occupied and not replace:
                raise BackupError(f"The PostgreSQL database(s) {', '.join(occupied)} already hold data: restore "
                                  "with another project or server, or pass --replace to rename them aside (kept) "
                                  "and restore in their place")
            manifest["replaced_databases"] = pgdump.restore(cfg, dumps, Path(tmp), stamp.replace("-", ""))
        except pgdump.PgDumpError as e:
            raise BackupError(str(e)) from e
        if holds_data:
            state.rename(state.with_name(f"{state.name}.replaced-{stamp}"))
        elif state.exists():
            state.rmdir()  # empty
        restored.replace(state)
    return manifest
