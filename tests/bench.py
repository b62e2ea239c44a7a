"""Drives the benchmark that tests/bench starts: see the README's Performance section."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
# Each load runs this many times; the table shows the run with the median rate, and the
# range of rates, because a shared machine's noise is larger than most changes.
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tripline")

WORKFLOWS = {
    "ingest.yaml": """
id: ingest
triggers:
  - type: webhook
    token: bench-ingest-token-000000001
    response: async
steps:
  - id: shape
    type: transform
    value: { id: "{{ trigger.body.id }}", ok: true }
""",
    "three.yaml": """
id: three
triggers:
  - type: webhook
    token: bench-three-token-000000001
    response: async
steps:
  - id: a
    type: transform
    value: { id: "{{ trigger.body.id }}" }
  - id: b
    type: transform
    value: { id: "{{ steps.a.id }}", twice: "{{ steps.a.id * 2 }}" }
  - id: c
    type: transform
    value: { sum: "{{ steps.b.id + steps.b.twice }}" }
""",
    "sync.yaml": """
id: sync
triggers:
  - type: webhook
    token: bench-sync-token-0000000001
    response: sync
steps:
  - id: shape
    type: transform
    value: { id: "{{ trigger.body.id }}", doubled: "{{ trigger.body.id * 2 }}" }
""",
}

LUA = """
wrk.method = "POST"
wrk.body = '{"id": 21, "customer": "c-42", "items": [{"sku": "a", "qty": 1}]}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_server(wf_dir, data_dir, port):
    env = dict(os.environ, RUST_LOG="warn")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        # One token from one client at full speed: the per-token rate limit (default
        # 5,000/s) is lifted to measure what the server can take.
        [BIN, "serve", "--workflows", wf_dir, "--data", data_dir, "--listen", f"127.0.0.1:{port}",
         "--rate-limit", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server stopped: " + proc.stderr.read().decode())
            if time.perf_counter() - t0 > 10:
                raise SystemExit("the server did not answer within 10 s")
    return proc, (time.perf_counter() - t0) * 1000


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    v, unit = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[unit]


def wrk(url, conns, seconds, lua, pid):
    # One wrk thread drives 64 connections on loopback; a second would take CPU from the server.
    threads = 1
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.2)

    t = threading.Thread(target=sample)
    t.start()
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--latency", "-s", lua, url],
        capture_output=True, text=True, timeout=seconds + 60).stdout
    done.set()
    t.join()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps, "p50": to_ms(lat["50"]), "p99": to_ms(lat["99"]),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": errors.group(0) if errors else "", "peak_rss_kb": peak[0],
    }


def repeated(url, conns, lua, pid):
    runs = sorted((wrk(url, conns, SECONDS, lua, pid) for _ in range(REPEAT)), key=lambda r: r["rps"])
    median = dict(runs[len(runs) // 2])
    median["range"] = f"{runs[0]['rps']:.0f}–{runs[-1]['rps']:.0f}"
    median["peak_rss_kb"] = max(r["peak_rss_kb"] for r in runs)
    median["non2xx"] = sum(r["non2xx"] for r in runs)
    return median


def get_json(url):
    with urllib.request.urlopen(url) as resp:
        return json.load(resp)


def count_runs(base, workflow, status):
    """Counts a workflow's runs in a status by paging through the API."""
    n, cursor = 0, None
    while True:
        url = f"{base}/v1/runs?workflow={workflow}&status={status}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = get_json(url)
        n += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return n


def pipeline(base, lua, pid):
    """Three-step runs accepted under load at c=64 and finished: runs per second from the
    first request to the last run ended."""
    t0 = time.perf_counter()
    wrk(f"{base}/hooks/bench-three-token-000000001", 64, SECONDS, lua, pid)
    while True:
        if count_runs(base, "three", "queued") == 0 and count_runs(base, "three", "running") == 0:
            break
        if time.perf_counter() - t0 > SECONDS + 120:
            raise SystemExit("three-step runs did not finish within 120 s of the load")
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    done = count_runs(base, "three", "succeeded")
    return done, elapsed


def main():
    tmp = tempfile.mkdtemp(prefix="tripline-bench-")
    wf_dir, data_dir = os.path.join(tmp, "workflows"), os.path.join(tmp, "data")
    os.makedirs(wf_dir)
    for name, text in WORKFLOWS.items():
        with open(os.path.join(wf_dir, name), "w") as f:
            f.write(text)
    lua = os.path.join(tmp, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    port = free_port()
    proc, ready_ms = start_server(wf_dir, data_dir, port)
    try:
        time.sleep(1.0)
        idle = rss_kb(proc.pid)
        base = f"http://127.0.0.1:{port}"
        rows = []
        peak = idle
        for c in (1, 8, 64):
            r = repeated(f"{base}/hooks/bench-ingest-token-000000001", c, lua, proc.pid)
            peak = max(peak, r["peak_rss_kb"])
            rows.append((f"async webhook ingest, c={c}", r))
        r = repeated(f"{base}/hooks/bench-sync-token-0000000001", 1, lua, proc.pid)
        peak = max(peak, r["peak_rss_kb"])
        rows.append(("sync reply, one transform, c=1", r))
        three_done, three_secs = pipeline(base, lua, proc.pid)
        with urllib.request.urlopen(f"{base}/v1/runs?workflow=ingest&status=queued&limit=1") as resp:
            backlog = len(json.load(resp)["items"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    size = os.path.getsize(BIN)
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"\nTripline benchmark: {cpu} cores, {SECONDS}s per load run, each run {REPEAT}x (median shown), wrk on the same machine (loopback)")
    print("store: SQLite WAL, synchronous=FULL: every 2xx is on disk (group commit)\n")
    print("| measure | requests/s | range | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in rows:
        print(f"| {name} | {r['rps']:.0f} | {r['range']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['non2xx']} | {r['errors'] or '-'} |")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| `tripline serve` start to first answer (/healthz) | {ready_ms:.0f} ms |")
    print(f"| resident memory, idle after start | {idle / 1024:.1f} MiB |")
    print(f"| resident memory, peak under load | {peak / 1024:.1f} MiB |")
    print(f"| runs still queued after the load (executor backlog) | {'yes' if backlog else 'none'} |")
    print(f"| three-step runs accepted at c=64 and finished, end to end | {three_done / three_secs:.0f} runs/s ({three_done} in {three_secs:.1f} s) |")
    print(f"| release binary size | {size / 1024 / 1024:.1f} MiB |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
