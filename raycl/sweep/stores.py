"""The sweep's stores (Optuna storage, MLflow tracking URI): their URLs made concrete, and each one
checked for reachability before the sweep creates anything in any of them.

An unreachable store fails in seconds with one line, its password redacted, instead of MLflow's
minutes of retries after the Optuna study was already created (which then blocked a plain rerun).
"""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from raycl.config import ConfigError
from raycl.sweep.redaction import redact_url

CONNECT_TIMEOUT_S = 5
# The PostgreSQL driver raycl ships (the `postgres` extra, installed by cluster.yaml). SQLAlchemy 2.1
# maps a bare `postgresql://` to psycopg 3 instead, which is not installed.
POSTGRES_DRIVER = "psycopg2"
_DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}


def database_url(url: str) -> str:
    """`url` with a bare PostgreSQL scheme (`postgresql://`, `postgres://`) pinned to the shipped driver."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+{POSTGRES_DRIVER}://{rest}"
    return url


def check_stores(storage: str | None, tracking_uri: str | None) -> None:
    """Raise a one-line `ConfigError` if the given Optuna storage or MLflow tracking URI cannot be reached.

    None (the sweep's own sqlite files) and local sqlite files are not checked: they are created
    when the sweep opens them. Nothing is created here.
    """
    if storage is not None:
        _check(storage, "--storage", "the Optuna storage")
    if tracking_uri is not None:
        _check(tracking_uri, "--tracking-uri", "the MLflow tracking store")


def _check(url: str, option: str, what: str) -> None:
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme in ("http", "https"):
        _check_server(url, option, what)
    elif scheme in ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"):
        _check_database(url, option, what)


def _unreachable(url: str, option: str, what: str, why: str) -> ConfigError:
    password = urlsplit(url).password
    if password:
        why = why.replace(password, "***")
    return ConfigError(f"{option} {redact_url(url)}: cannot reach {what} ({why})")


def _check_server(url: str, option: str, what: str) -> None:
    """MLflow's health endpoint answers "OK" (anything else that listens there is no MLflow server)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise _unreachable(url, option, what, "not a server URL: no host")
    try:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    except ValueError as error:
        raise _unreachable(url, option, what, f"not a server URL: {error}") from None
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    headers = {}
    if parts.username:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(health, headers=headers), timeout=CONNECT_TIMEOUT_S
        ) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _unreachable(url, option, what, f"no answer within {CONNECT_TIMEOUT_S} s") from None
        raise _unreachable(url, option, what, getattr(reason, "strerror", None) or str(reason)) from None
    if status != 200:
        raise _unreachable(
            url,
            option,
            what,
            f"HTTP {status} from /health: not an MLflow tracking server, or it refused the credentials",
        )


def _check_database(url: str, option: str, what: str) -> None:
    """One SQLAlchemy connection, opened and closed: the server is up and takes these credentials."""
    import sqlalchemy
    import sqlalchemy.exc

    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if url.startswith(("postgres", "mysql", "mariadb")) else {}
    try:
        engine = sqlalchemy.create_engine(database_url(url), connect_args=timeout)
    except ModuleNotFoundError as error:
        package = _DRIVER_PACKAGES.get(error.name or "", error.name)
        raise _unreachable(url, option, what, f"its driver is not installed: pip install {package}") from None
    except sqlalchemy.exc.ArgumentError as error:
        raise _unreachable(url, option, what, f"not a database URL: {error}") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as error:
        raise _unreachable(url, option, what, _first_line(error.orig)) from None
    finally:
        engine.dispose()


def _first_line(error: BaseException | None) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
