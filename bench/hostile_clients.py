"""Whether ``dunlink api`` still answers signed IPNs within a second while hostile clients hold connections,
and whether its memory stays bounded.

A real ``dunlink api`` (PostgreSQL, Redis broker, no worker) with its default limits (README, Security) is
measured phase after phase. In every phase signed ``payment.failed`` IPNs are sent at ``--rate`` per second,
each on a new connection as CopeCart sends them, and their latency (connect to the end of the answer) is
recorded; the api's resident memory (VmRSS) is sampled every 0.25 s.

quiet
    No hostile client.
slow
    ``--slow`` connections (1,000): a third send their request head a byte a second, a third send a complete
    head and then their body a byte a second, a third connect and send nothing. Each one the api closes is
    opened again after a second, as an attacker would, so about ``--slow`` stay open for the whole phase.
flood
    ``--flood`` idle connections (3,000), more than ``DUNLINK_API_MAX_CONNECTIONS`` (2,048 by default): the
    oldest waiting ones are closed to make room, and opened again after a second.
oversize
    ``--oversize`` clients (50) each sending a 4 MiB request head that never ends, again a second after the
    api closes them.
after
    Every hostile client gone.

Printed per phase: hostile connections open (mean of samples), how many the api closed and how long it had
held them (median and longest), IPNs answered ``OK`` out of those sent, their p50/p99/longest latency, and the
api's memory at the start, at most and at the end. Then what the api's ``/metrics`` counted as closed by its
limits, and the inbox rows against the IPNs answered ``OK``.

    .venv/bin/python bench/hostile_clients.py [--slow 1000] [--flood 3000] [--oversize 50] [--seconds 30]
        [--rate 5] [--json bench/out/hostile_clients.json]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import httpx  # noqa: E402
import pipeline  # noqa: E402

from adapters.platform.port import Order  # noqa: E402
from dunlink.config.settings import Settings  # noqa: E402
from dunlink.devtools.processes import ProcessGroup, free_port, serving  # noqa: E402
from dunlink.sandbox.ipn import build_ipn, sign  # noqa: E402
from dunlink.webapp.serving import ConnectionLimits  # noqa: E402
from tests.support.stack import OPS_HEADERS, SECRET, order_json  # noqa: E402

HEAD = b"POST /webhooks/copecart/acme HTTP/1.1\r\nHost: dunlink.bench\r\nContent-Type: application/json\r\n"
REOPEN_AFTER_S = 1.0
LATENCY_TARGET_S = 1.0


class Hostile:
    """Hostile clients, each reopened a second after the api closes it, on an event loop in a process of their
    own: in this process they would hold the interpreter lock while the IPNs' answers are timed."""

    def __init__(self, port: int, kinds: dict[str, int]) -> None:
        self.port, self.kinds = port, kinds
        self._open = multiprocessing.Value("i", 0)
        self.opened: Counter[str] = Counter()
        self.held: dict[str, list[float]] = {kind: [] for kind in kinds}
        self.refused = 0
        self._stop: asyncio.Event | None = None
        self._stopping = multiprocessing.Event()
        self._results: multiprocessing.Queue[dict[str, Any]] = multiprocessing.Queue()
        self._process = multiprocessing.Process(target=self._main, daemon=True)

    @property
    def open(self) -> int:
        return int(self._open.value)

    def __enter__(self) -> Hostile:
        self._process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        found = self._results.get(timeout=60)
        self._process.join(timeout=30)
        self.opened, self.held, self.refused = Counter(found["opened"]), found["held"], found["refused"]

    def _main(self) -> None:
        asyncio.run(self._run())
        self._results.put({"opened": dict(self.opened), "held": self.held, "refused": self.refused})

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        total = sum(self.kinds.values())
        clients: list[asyncio.Task[None]] = []
        for kind, count in self.kinds.items():
            for _ in range(count):
                clients.append(asyncio.create_task(self._client(kind, ramp=2.0 * len(clients) / max(1, total))))
        while not self._stopping.is_set():
            await asyncio.sleep(0.2)
        self._stop.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)

    async def _client(self, kind: str, *, ramp: float) -> None:
        assert self._stop is not None
        await asyncio.sleep(ramp)
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(REOPEN_AFTER_S)
                continue
            with self._open.get_lock():
                self._open.value += 1
            self.opened[kind] += 1
            started = time.monotonic()
            closed = asyncio.ensure_future(_until_closed(reader))
            try:
                await self._behave(kind, writer, closed)
            finally:
                with self._open.get_lock():
                    self._open.value -= 1
                writer.close()
                if not closed.done():
                    closed.cancel()
            if closed.done():
                self.held[kind].append(time.monotonic() - started)
            await asyncio.sleep(REOPEN_AFTER_S)

    async def _behave(self, kind: str, writer: asyncio.StreamWriter, closed: asyncio.Future[bytes]) -> None:
        assert self._stop is not None
        try:
            if kind == "slow_header":
                writer.write(HEAD + b"X-Slow: ")
            elif kind == "slow_body":
                writer.write(HEAD + b"Content-Length: 100000\r\nX-Copecart-Signature: x\r\n\r\n{")
            elif kind == "oversize":
                writer.write(HEAD + b"X-Big: ")
                for _ in range(64):  # 4 MiB, as long as the api reads it
                    if closed.done():
                        return
                    writer.write(b"a" * 65536)
                    await writer.drain()
            while not self._stop.is_set():
                await asyncio.wait([closed], timeout=1.0)
                if closed.done():
                    return
                if kind in ("slow_header", "slow_body"):
                    writer.write(b"a")  # one byte a second
        except (ConnectionError, OSError):
            await asyncio.wait([closed], timeout=1.0)


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the api sends until it closes the connection (nothing, or its 408 or 431)."""
    try:
        return await reader.read()
    except (ConnectionError, OSError):
        return b""


def signed_ipns() -> Iterator[tuple[bytes, str]]:
    """Distinct signed payment.failed IPNs, one unique transaction_id each."""
    template = Order.from_json(order_json("CC-HOSTILE"))
    now = datetime.now(UTC)
    for i in range(10**9):
        payload = build_ipn(template, pipeline.FAILED_INSTALLMENT, action="fail", transaction_id=f"T-HOSTILE-{i}",
                            ordered_at=now, now=now)
        payload["order_id"] = f"CC-HOSTILE-{i}"
        body = json.dumps(payload, separators=(",", ":")).encode()
        yield body, sign(SECRET, body)


def send_ipn(port: int, body: bytes, signature: str) -> tuple[int, float]:
    """One IPN on a new connection: (status, seconds from connect to the end of the answer); status 0 on error."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/webhooks/copecart/acme", body=body,
                           headers={"Content-Type": "application/json", "X-Copecart-Signature": signature})
        answer = connection.getresponse()
        text = answer.read()
        status = answer.status if text == b"OK" or answer.status != 200 else 0
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def sampling(pid: int, hostile: Hostile | None) -> Iterator[dict[str, list[float]]]:
    """The api's memory and the hostile connections open, every 0.25 s while inside."""
    samples: dict[str, list[float]] = {"rss": [rss_mib(pid)], "open": []}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            samples["rss"].append(rss_mib(pid))
            if hostile is not None:
                samples["open"].append(hostile.open)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()
        samples["rss"].append(rss_mib(pid))


def phase(name: str, *, port: int, pid: int, ipns: Iterator[tuple[bytes, str]], seconds: float, rate: float,
          kinds: dict[str, int] | None) -> dict[str, Any]:
    print(f"  {name}: {seconds:.0f} s ...", file=sys.stderr, flush=True)
    hostile = Hostile(port, kinds) if kinds else None
    answers: list[tuple[int, float]] = []
    sent_at: list[float] = []
    with hostile or _nothing(), sampling(pid, hostile) as samples:
        if hostile is not None:
            time.sleep(3.0)  # every hostile client has connected (they ramp up over 2 s)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = started + sent / rate
            time.sleep(max(0.0, due - time.monotonic()))
            sent_at.append(time.monotonic() - started)
            answers.append(send_ipn(port, *next(ipns)))
            sent += 1
    latencies = sorted(seconds_ for status, seconds_ in answers if status == 200)
    held = [value for values in (hostile.held.values() if hostile else ()) for value in values]
    return {
        "phase": name, "hostile": dict(kinds or {}),
        "open_mean": statistics.fmean(samples["open"]) if samples["open"] else 0.0,
        "opened": sum(hostile.opened.values()) if hostile else 0,
        "closed_by_api": len(held), "refused_connects": hostile.refused if hostile else 0,
        "held_median_s": statistics.median(held) if held else None, "held_max_s": max(held) if held else None,
        "held_by_kind": {kind: (statistics.median(v) if v else None, max(v) if v else None, len(v))
                         for kind, v in (hostile.held.items() if hostile else ())},
        "ipns": len(answers), "ok": len(latencies),
        "statuses": dict(Counter(status for status, _ in answers)),
        "p50_ms": _percentile(latencies, 50) * 1000, "p99_ms": _percentile(latencies, 99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "slowest": sorted(((round(1000 * took), round(at, 1)) for at, (_, took) in zip(sent_at, answers, strict=True)),
                          reverse=True)[:5],
        "rss_start_mib": samples["rss"][0], "rss_max_mib": max(samples["rss"]), "rss_end_mib": samples["rss"][-1],
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(percent / 100 * len(values) + 0.5) - 1))]


def closed_counters(api_url: str) -> dict[str, float]:
    text = httpx.get(f"{api_url}/metrics", headers=OPS_HEADERS, timeout=30).text
    counted = {}
    for line in text.splitlines():
        if line.startswith("dunlink_api_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counted[reason] = float(line.rsplit(" ", 1)[1])
    return counted


def print_table(results: dict[str, Any]) -> None:
    print(f"\ndunlink api under hostile clients ({results['limits']}); signed IPNs at {results['rate']}/s, "
          f"each on a new connection; load {results['load']:.2f} before")
    print(f"{'phase':<34} {'open':>6} {'closed':>7} {'held s (med/max)':>17} {'IPNs OK':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'RSS MiB start/max/end':>22}")
    for r in results["phases"]:
        held = ("-" if r["held_median_s"] is None else f"{r['held_median_s']:.1f}/{r['held_max_s']:.1f}")
        print(f"{r['label']:<34} {r['open_mean']:>6.0f} {r['closed_by_api']:>7} {held:>17} "
              f"{r['ok']:>4}/{r['ipns']:<4} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} "
              f"{r['rss_start_mib']:>7.1f}/{r['rss_max_mib']:.1f}/{r['rss_end_mib']:.1f}")
    print(f"closed by the api's limits (/metrics): {results['closed_counters']}")
    print(f"inbox rows {results['stored']} for {results['answered_ok']} IPNs answered OK: "
          f"{'consistent' if results['stored'] == results['answered_ok'] else 'MISMATCH'}")
    worst = max(r["max_ms"] for r in results["phases"])
    print(f"longest IPN answer {worst:.0f} ms (target under {LATENCY_TARGET_S * 1000:.0f} ms: "
          f"{'met' if worst < LATENCY_TARGET_S * 1000 and results['all_ok'] else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=1000, help="slow and idle connections of the slow phase")
    parser.add_argument("--flood", type=int, default=3000, help="idle connections of the flood phase (0: none)")
    parser.add_argument("--oversize", type=int, default=50, help="clients sending 4 MiB heads (0: none)")
    parser.add_argument("--seconds", type=float, default=30, help="length of each hostile phase (30)")
    parser.add_argument("--rate", type=float, default=5, help="signed IPNs per second (5)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database index, flushed (12)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(args.slow, args.flood) + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    out = BENCH / "out" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S-hostile")
    third = args.slow // 3
    phases: list[tuple[str, str, float, dict[str, int] | None]] = [
        ("quiet", "quiet", 10.0, None),
        ("slow", f"slow: {args.slow} (head, body, idle)", args.seconds,
         {"slow_header": args.slow - 2 * third, "slow_body": third, "idle": third}),
    ]
    if args.flood:
        phases.append(("flood", f"flood: {args.flood} idle", args.seconds, {"idle": args.flood}))
    if args.oversize:
        phases.append(("oversize", f"oversize: {args.oversize} x 4 MiB heads", args.seconds,
                       {"oversize": args.oversize}))
    phases.append(("after", "after (hostile clients gone)", 10.0, None))

    results: dict[str, Any] = {"rate": args.rate, "load": float(Path("/proc/loadavg").read_text().split()[0]),
                               "phases": []}
    with pipeline.fresh_database("hostile") as database, pipeline.redis_database(args.redis_db) as (broker, _):
        env = pipeline.dunlink_env(database=database, broker=broker, vendors=pipeline.write_vendors(out))
        with ProcessGroup(env=env, log_dir=out / "logs", cwd=out) as group:
            port = free_port()
            api_url = f"http://127.0.0.1:{port}"
            api = group.start("api", ["api", "--port", str(port)], ready=serving(f"{api_url}/healthz"), timeout=60)
            limits = ConnectionLimits.from_settings(Settings(database_url=database))
            results["limits"] = (f"max {limits.max_connections} connections, head {limits.header_timeout:g} s, "
                                 f"body {limits.body_timeout:g} s, keep-alive {limits.keep_alive} s, "
                                 f"head at most {limits.max_head_bytes // 1024} KiB")
            ipns = signed_ipns()
            # Warm: imports, the writer's connection, the first commit.
            warm = sum(send_ipn(port, *next(ipns))[0] == 200 for _ in range(20))
            for name, label, seconds, kinds in phases:
                result = phase(name, port=port, pid=api.popen.pid, ipns=ipns, seconds=seconds, rate=args.rate,
                               kinds=kinds)
                result["label"] = label
                results["phases"].append(result)
                if kinds:
                    time.sleep(3.0)  # the api notices the hostile clients gone
            results["closed_counters"] = closed_counters(api_url)
            time.sleep(1.0)
            results["stored"] = int(pipeline.query(database, "SELECT count(*) FROM inbox_events")[0][0])
    results["answered_ok"] = warm + sum(r["ok"] for r in results["phases"])
    results["all_ok"] = all(r["ok"] == r["ipns"] for r in results["phases"])
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
