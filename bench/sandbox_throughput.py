"""Throughput of the sandbox's order API, so it is never the bottleneck of a pipeline benchmark.

Starts ``dunlink sandbox`` as a subprocess, seeds one order, then drives
``GET /v1/orders/{id}`` and ``POST /v1/orders`` (a unique Idempotency-Key each, so every POST creates an
order) from a separate load-generator process: ``wrk`` with a Lua script when it is installed
(``apt-get install wrk``; wrk runs for a fixed time, ``--seconds``), else a Python generator (threads with
keep-alive connections, a fixed number of ``--requests``), which is slower than the sandbox and so
understates it. It checks that every POST made exactly one order.

    .venv/bin/python bench/sandbox_throughput.py [--seconds 10] [--connections 32] [--python]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.sandbox import (  # noqa: E402
    replacement_for,
    running_sandbox,
    sample_order,
    write_vendors_file,
)

TOKEN = "bench-token"

LUA = """
local method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")
local counter = 0
local ids = 0
-- thread_id is a global of each thread's Lua state, set by setup()

function setup(thread)
  ids = ids + 1
  thread:set("thread_id", ids)
end

function request()
  counter = counter + 1
  local headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
  if method == "POST" then
    headers["Idempotency-Key"] = "bench-" .. thread_id .. "-" .. counter
    return wrk.format("POST", "/v1/orders", headers, body)
  end
  return wrk.format("GET", "/v1/orders/CC-1001", headers)
end
""".replace("%(token)s", TOKEN)


def run_wrk(base_url: str, *, method: str, seconds: int, connections: int, threads: int,
            body: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    env = {"BENCH_METHOD": method, "BENCH_BODY": body, "PATH": "/usr/bin:/bin"}
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, base_url],
        env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    Path(script.name).unlink()

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{output}")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return {"requests": float(total[1]), "rps": float(rate[1]), "p50": latency("50"), "p99": latency("99"),
            "errors": float(errors[1]) if errors else 0.0}


PY_LOADGEN = r"""
import http.client, json, sys, threading, time
host, port, method, token, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[6], sys.argv[7]
total, conns = int(sys.argv[4]), int(sys.argv[5])
per = total // conns
latencies, errors, lock = [], [0], threading.Lock()
def worker(n):
    c = http.client.HTTPConnection(host, port, timeout=10)
    mine, bad = [], 0
    for i in range(per):
        headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        t = time.perf_counter()
        if method == "POST":
            headers["Idempotency-Key"] = "bench-py-%d-%d" % (n, i)
            c.request("POST", "/v1/orders", body=body, headers=headers)
        else:
            c.request("GET", "/v1/orders/CC-1001", headers=headers)
        r = c.getresponse(); r.read()
        mine.append(time.perf_counter() - t)
        bad += r.status >= 300
    with lock:
        latencies.extend(mine); errors[0] += bad
threads = [threading.Thread(target=worker, args=(n,)) for n in range(conns)]
start = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - start
latencies.sort()
print(json.dumps({"requests": len(latencies), "rps": len(latencies) / elapsed,
                  "p50": latencies[len(latencies) // 2] * 1000, "p99": latencies[int(len(latencies) * 0.99)] * 1000,
                  "errors": errors[0]}))
"""


def run_python(base_url: str, *, method: str, requests: int, connections: int, body: str) -> dict[str, float]:
    host, port = base_url.removeprefix("http://").split(":")
    output = subprocess.run(
        [sys.executable, "-c", PY_LOADGEN, host, port, method, str(requests), str(connections), TOKEN, body],
        capture_output=True, text=True, check=True, timeout=600).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk: seconds per endpoint (default 10)")
    parser.add_argument("--requests", type=int, default=20000,
                        help="Python generator: requests per endpoint (default 20000)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--python", action="store_true", help="use the Python load generator even with wrk")
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python
    body = json.dumps(replacement_for(sample_order("CC-1001")).to_json())

    with tempfile.TemporaryDirectory() as directory, running_sandbox(
        vendors_file=write_vendors_file(Path(directory)), webhook_base="http://127.0.0.1:9", token=TOKEN
    ) as base_url:
        import httpx

        httpx.post(f"{base_url}/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
        results = {}
        for label, method in (("GET /v1/orders/{id}", "GET"), ("POST /v1/orders", "POST")):
            time.sleep(0.5)
            if use_wrk:
                results[label] = run_wrk(base_url, method=method, seconds=args.seconds,
                                         connections=args.connections, threads=2, body=body)
            else:
                results[label] = run_python(base_url, method=method, requests=args.requests,
                                            connections=args.connections, body=body)
        created = len(httpx.get(f"{base_url}/sandbox/orders", params={"replaces": "CC-1001"}, timeout=30).json())

    generator = (f"wrk (2 threads, Lua script), {args.seconds} s per endpoint" if use_wrk
                 else f"Python threads with keep-alive (understates), {args.requests} requests per endpoint")
    print(f"sandbox throughput, load generator: {generator}, {args.connections} connections")
    print(f"{'endpoint':<22} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for label, r in results.items():
        print(f"{label:<22} {int(r['requests']):>9} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
              f"{int(r['errors']):>8}")
    posts = int(results["POST /v1/orders"]["requests"])
    print(f"orders created by POST: {created} (POST requests answered: {posts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
