"""Store URLs: redacted wherever they are shown, PostgreSQL pinned to the shipped driver, and an
unreachable store refused in seconds with one line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from raycl.config import ConfigError
from raycl.sweep.redaction import redact_url
from raycl.sweep.stores import POSTGRES_DRIVER, check_stores, database_url

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://host/db?user=u&password=pw", "postgresql://host/db?user=u&password=***"),
        ("postgresql://u:pw@host:5432/db?sslmode=require", "postgresql://u:***@host:5432/db?sslmode=require"),
        ("mysql://u@host/db?sslpassword=pw&charset=utf8", "mysql://u@host/db?sslpassword=***&charset=utf8"),
        ("http://alice:trackpw@10.0.0.5:5000", "http://alice:***@10.0.0.5:5000"),
        ("http://alice:p@ss@10.0.0.5:5000", "http://alice:***@10.0.0.5:5000"),
        ("sqlite:////tmp/runs/optuna.db", "sqlite:////tmp/runs/optuna.db"),
        ("sqlite:////tmp/x.db?token=hf_abc", "sqlite:////tmp/x.db?token=***"),
    ],
)
def test_redact_url_hides_passwords_in_the_user_part_and_the_query(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_bare_postgresql_urls_get_the_shipped_driver() -> None:
    assert database_url("postgresql://u:pw@h:5432/optuna") == f"postgresql+{POSTGRES_DRIVER}://u:pw@h:5432/optuna"
    assert database_url("postgres://h/db") == f"postgresql+{POSTGRES_DRIVER}://h/db"
    for unchanged in ("postgresql+psycopg://h/db", "sqlite:////tmp/a.db", "http://h:5000", "mysql+pymysql://h/db"):
        assert database_url(unchanged) == unchanged
    # SQLAlchemy maps the bare scheme to another driver; the pinned URL loads the one installed.
    assert sqlalchemy.create_engine(database_url("postgresql://u:pw@h/db")).dialect.driver == POSTGRES_DRIVER


def test_every_cluster_url_names_the_driver_the_cluster_installs() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    commands = " ".join(config["head_setup_commands"] + config["head_start_ray_commands"])
    urls = re.findall(r"postgres\w*(?:\+\w+)?://", commands)
    assert len(urls) == 2 and set(urls) == {f"postgresql+{POSTGRES_DRIVER}://"}  # Optuna's and MLflow's
    assert f"{POSTGRES_DRIVER}-binary" in " ".join(config["setup_commands"])


@pytest.mark.parametrize(
    ("storage", "tracking_uri", "expected"),
    [
        (
            None,
            "http://u:pw@127.0.0.1:9",
            "--tracking-uri http://u:***@127.0.0.1:9: cannot reach the MLflow tracking store",
        ),
        (
            "postgresql://u:pw@127.0.0.1:9/optuna",
            None,
            "--storage postgresql://u:***@127.0.0.1:9/optuna: cannot reach the Optuna storage",
        ),
        ("postgresql://127.0.0.1:9/optuna?user=u&password=pw", None, "password=***: cannot reach the Optuna storage"),
        (None, "postgresql://u:pw@127.0.0.1:9/mlflow", "cannot reach the MLflow tracking store"),
        ("mysql://u:pw@127.0.0.1:9/optuna", None, "its driver is not installed"),
    ],
)
def test_an_unreachable_store_is_one_line_within_seconds_without_its_password(storage, tracking_uri, expected) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        check_stores(storage, tracking_uri)
    message = str(caught.value)
    assert time.perf_counter() - started < 10
    assert expected in message
    assert "\n" not in message and "pw" not in message


def test_local_stores_are_not_touched(tmp_path: Path) -> None:
    check_stores(None, None)
    check_stores(f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def http_server():
    """A local HTTP server answering "OK" at /health only; yields its base URL and the headers it saw."""
    import http.server
    import threading

    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            healthy = self.path == "/health"
            self.send_response(200 if healthy else 404)
            self.end_headers()
            self.wfile.write(b"OK" if healthy else b"")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_tracking_server_must_answer_mlflows_health_check(http_server) -> None:
    address, seen = http_server
    check_stores(None, f"http://alice:pw@{address}")
    assert seen[-1]["Authorization"] == "Basic YWxpY2U6cHc="  # the URL's credentials, as MLflow sends them
    # Something listens, but it is no MLflow server: refused before anything is created.
    with pytest.raises(ConfigError) as caught:
        check_stores(None, f"http://alice:pw@{address}/not-mlflow")
    assert "HTTP 404 from /health" in str(caught.value) and "pw" not in str(caught.value)
