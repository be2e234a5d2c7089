"""What the README starts and what ships beside it agree: the client's key, the Generator's replica
bound on the documented 2-CPU machine, and the load bench's clients and its 429 handling."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from l2ray.recipe import ServeConfig

REPO = Path(__file__).resolve().parents[1]
ARGS = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]["args"]
DOCUMENTED_CPUS = 2.0


def test_readme_client_sends_the_key_the_readme_serves_with():
    readme = (REPO / "README.md").read_text()
    served_keys = re.findall(r"L2RAY_API_KEYS=(\S+) .*serve run serve_config\.yaml", readme)
    client_keys = re.findall(r'OpenAI\(base_url="http://127\.0\.0\.1:(\d+)/v1", api_key="([^"]+)"\)', readme)
    assert ARGS["api_keys_env"] == "L2RAY_API_KEYS" and served_keys and client_keys
    port = str(yaml.safe_load((REPO / "serve_config.yaml").read_text())["http_options"]["port"])
    assert all(key == served_keys[0] and client_port == port for client_port, key in client_keys)


def test_every_generator_replica_the_autoscaler_may_ask_for_fits_the_documented_machine():
    ingress = ServeConfig.model_fields["router_num_cpus"].default  # the reasoning controller runs in it
    asked = ARGS["autoscaling"]["max_replicas"] * ARGS["num_cpus"] + ingress
    assert asked <= DOCUMENTED_CPUS + 1e-9, (
        f"max_replicas asks for {asked} CPUs on a {DOCUMENTED_CPUS}-CPU machine"
    )


def _bench():
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "bench" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_bench_defaults_to_the_shipped_per_key_limit(monkeypatch):
    monkeypatch.setattr("sys.argv", ["serve_load.py"])
    assert _bench()._parse().clients == ARGS["max_concurrency_per_key"]


class _Throttling(BaseHTTPRequestHandler):
    """Answers the first few requests with a 429 (Retry-After on every other one), then succeeds."""

    throttle_left = 4
    lock = threading.Lock()

    def do_POST(self):
        request = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            throttled = _Throttling.throttle_left > 0
            _Throttling.throttle_left -= 1
        if throttled:
            self.send_response(429)
            if _Throttling.throttle_left % 2:
                self.send_header("Retry-After", "0.05")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        usage = {"completion_tokens": 3, "thinking_tokens": 1}
        if json.loads(request)["stream"]:
            body = f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()
        else:
            body = json.dumps({"choices": [{}], "usage": usage}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


def test_load_bench_backs_off_on_429_and_does_not_count_it_as_an_error():
    bench = _bench()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        args = argparse.Namespace(clients=2, duration=1.0, max_tokens=8, api_key=None, timeout=10.0)
        stats = asyncio.run(bench.load(url, args))
    finally:
        server.shutdown()
    assert stats["throttled"] == 4 and not stats["errors"]
    assert stats["latencies"] and stats["tokens"] == 3 * len(stats["latencies"])
    assert all(0 <= bench._backoff(attempt) <= bench.BACKOFF_S[1] for attempt in range(20))
