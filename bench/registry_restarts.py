"""What the registry survives: MLflow's auth app on PostgreSQL (the layout of k8s/base/mlflow.yaml, on
this machine), its server killed and restarted, its database restarted, and how long a client keeps
retrying. Figures for docs/cluster.md's reliability table.

  (a) MLflow pod restart: SIGKILL the server, start it again on the same store; seconds until
      ``/health`` answers, and whether an authenticated call made while it was down completes (on
      MLflow's client retries) and with what wait;
  (b) database restart: ``pg_ctl restart`` under the running server; seconds of the restart and of
      the first authenticated call after it;
  (c) retry window: seconds until a client call fails against a server that stays down, with MLflow's
      default retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7, backoff factor 2, backoff cap 120 s).

    .venv/bin/python bench/registry_restarts.py            # (a) and (b); about a minute
    .venv/bin/python bench/registry_restarts.py --window   # and (c): about four minutes more
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's real servers

from local_servers import acting_as, auth_server_in, free_port, postgres_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", action="store_true", help="also measure (c), the client's retry window")
    args = parser.parse_args()
    from mlflow import MlflowClient

    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_in() as postgres,
        auth_server_in(Path(tmp) / "mlflow", postgres, "bench") as auth,
    ):
        auth.server.ready()
        with acting_as(auth.create_user("bench")):
            client = MlflowClient(auth.url, auth.url)
            client.create_registered_model("bench")
            server_restart(auth.server, client)
            database_restart(postgres, client)
    if args.window:
        retry_window()


def server_restart(server, client) -> None:
    server.stop()
    started = time.monotonic()
    server.start().ready()
    print(
        f"(a) MLflow server killed, started again on the same store: healthy after "
        f"{time.monotonic() - started:.1f} s"
    )
    server.stop()
    started = time.monotonic()
    threading.Timer(1.0, server.start).start()
    client.get_registered_model("bench")  # made while the server is down: MLflow's retries carry it
    waited = time.monotonic() - started
    server.ready()
    print(
        f"(a) killed again: an authenticated call made while it was down completed after "
        f"{waited:.1f} s (the server was started 1.0 s after the kill)"
    )


def database_restart(postgres, client) -> None:
    started = time.monotonic()
    postgres.restart()
    restart = time.monotonic() - started
    started = time.monotonic()
    client.get_registered_model("bench")
    print(
        f"(b) PostgreSQL restarted under the running server in {restart:.1f} s; the first call after "
        f"it took {time.monotonic() - started:.2f} s"
    )


def retry_window() -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    try:
        MlflowClient(url, url).get_registered_model("bench")
    except MlflowException:
        print(f"(c) a call to a server that stays down fails after {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
