"""Credentials of the local stack when `stack.auth` is on (docs/security.md).

One user and password, shared by the Prefect server's basic auth and MLflow's basic-auth app, come from the
file named by `stack.auth_file` (one line `user:password`, readable by its owner only) or, when no file is
configured, from $HITL_AUTH_USER and $HITL_AUTH_PASSWORD. They reach servers and clients only through process
environments: never argv, config files, logs, Prefect parameters or job variables. Errors never quote them.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hitl.config import Config, StackConfig

USER_ENV, PASSWORD_ENV = "HITL_AUTH_USER", "HITL_AUTH_PASSWORD"
MIN_PASSWORD_CHARS = 12  # MLflow's basic-auth app refuses a shorter admin password
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class CredentialsError(ValueError):
    """The credentials are missing, malformed, or in a file others can read."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @property
    def auth_string(self) -> str:
        """Prefect's `user:password` form."""
        return f"{self.username}:{self.password}"


def _checked(username: str, password: str, source: str) -> Credentials:
    if not username or ":" in username or username != username.strip():
        raise CredentialsError(f"{source}: the user name must be non-empty, without ':' or surrounding spaces")
    if len(password) < MIN_PASSWORD_CHARS:
        raise CredentialsError(f"{source}: the password must have at least {MIN_PASSWORD_CHARS} characters "
                               "(MLflow's basic auth refuses shorter ones)")
    return Credentials(username, password)


def private_text(path: Path, what: str) -> str:
    """The text of a file only its owner can read (`what` names it in errors, e.g. "stack.auth_file")."""
    try:
        st = path.stat()
    except OSError as e:
        raise CredentialsError(f"{what} {path} cannot be read: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"{what} {path} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CredentialsError(f"{what} {path} belongs to another user; it must be yours, mode 0600")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CredentialsError(f"{what} {path} has mode {mode:04o}, readable by others; "
                               f"it must be 0600: run `chmod 600 {path}`")
    return path.read_text()


def read_file(path: Path) -> Credentials:
    """Credentials from a file holding one line `user:password`; refused unless only its owner can read it."""
    lines = [line for line in private_text(path, "stack.auth_file").splitlines() if line.strip()]
    if len(lines) != 1 or ":" not in lines[0]:
        raise CredentialsError(f"stack.auth_file {path} must hold exactly one line `user:password`")
    username, password = lines[0].split(":", 1)
    return _checked(username, password, f"stack.auth_file {path}")


def read_secrets(path: Path, what: str) -> dict[str, str]:
    """`KEY=value` lines (blank lines and `#` comments skipped) of a file only its owner can read."""
    out = {}
    for n, line in enumerate(private_text(path, what).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise CredentialsError(f"{what} {path} line {n} is not KEY=value")  # never quote the line: a secret
        out[key.strip()] = value.strip()
    return out


def load(stack: StackConfig) -> Credentials | None:
    """The configured credentials, or None when `stack.auth` is off."""
    if not stack.auth:
        return None
    if stack.auth_file:
        return read_file(Path(stack.auth_file).expanduser())
    username, password = os.environ.get(USER_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if not username or not password:
        raise CredentialsError(f"stack.auth is on but there are no credentials: set stack.auth_file (a 0600 file "
                               f"with one line user:password) or {USER_ENV} and {PASSWORD_ENV}")
    return _checked(username, password, f"{USER_ENV}/{PASSWORD_ENV}")


def client_env(creds: Credentials | None) -> dict[str, str]:
    """Environment variables that make Prefect and MLflow clients send `creds` (empty without them)."""
    if creds is None:
        return {}
    return {"PREFECT_API_AUTH_STRING": creds.auth_string,
            "MLFLOW_TRACKING_USERNAME": creds.username,
            "MLFLOW_TRACKING_PASSWORD": creds.password}


def auth_env(cfg: Config) -> dict[str, str]:
    """What a client process of the stack (a CLI, a worker, its flow runs) needs in its environment to
    authenticate; empty when `stack.auth` is off. Pass it as process environment only, never as Prefect
    parameters or job variables (those are stored in the Prefect database and shown in the UI)."""
    return client_env(load(cfg.stack))


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any interface


def binding_problem(stack: StackConfig) -> str | None:
    """Why the servers must not listen on `stack.host`, in one line; None when they may."""
    if is_loopback(stack.host):
        return None
    missing = [what for what, ok in (("authentication (stack.auth: true)", stack.auth),
                                     ("TLS (stack.tls_proxy: true, a TLS-terminating reverse proxy in front)",
                                      stack.tls_proxy)) if not ok]
    if not missing:
        return None
    return (f"Refusing to serve on {stack.host}, which is not a loopback address, without "
            f"{' and '.join(missing)}: set those keys or bind stack.host to 127.0.0.1 (docs/security.md).")
