"""PostgreSQL databases of a project (stack.database_url): created by `hitl up` when missing.

The Prefect server, the MLflow tracking server and the review store each get their own database on the
configured server (`<project>_prefect`, `<project>_mlflow`, `<project>_review`); each creates its tables.
"""

from __future__ import annotations

from hitl.config import Config

ROLES = ("prefect", "mlflow", "review")


class DatabaseError(RuntimeError):
    """The PostgreSQL server could not be reached or a database could not be created."""


def safe(url: str) -> str:
    """`url` with its password masked, for messages and `hitl status`."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show its scheme only
        return url.split("://", 1)[0] + "://..."


def ensure(cfg: Config) -> list[str]:
    """Create the project's databases that do not exist yet; returns the names created."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    if not cfg.stack.database_url:
        return []
    admin = cfg.postgres_url("x", "postgresql+psycopg2").rsplit("/", 1)[0] + "/postgres"
    names = [cfg.postgres_url(r, "postgresql").rsplit("/", 1)[1] for r in ROLES]
    created = []
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            have = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
            for name in names:
                if name not in have:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
    except SQLAlchemyError as e:
        why = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise DatabaseError(f"Cannot prepare the PostgreSQL databases on {safe(admin)}: {why}. Check "
                            f"stack.database_url (user, password, host, port) and that the user may CREATE "
                            f"DATABASE.") from e
    finally:
        engine.dispose()
    return created
