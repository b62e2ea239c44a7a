"""Drives the benchmark that tests/bench starts: see the README's Performance section.

Bodies are realistic: the 208-byte JSON of the n8n comparison and a ~2 KB GitHub-style
push event (tests/data). Beside Tripline, a bare axum server that parses the same JSON and
answers (the axum-reference example) is measured in the same run, so the ratio to what
these cores can do at all is visible whatever the noise. With SEED_RUNS (default
1,000,000; 0 skips it) a store seeded with that many messages and runs is measured
against an empty one: ingest, the listings, the console's pages."""

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
import urllib.error
import urllib.request

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
# Each load runs this many times; the table shows the run with the median rate, and the
# range of rates, because a shared machine's noise is larger than most changes.
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tripline")
AXUM = os.path.join(ROOT, "target", "release", "examples", "axum-reference")
SEEDER = os.path.join(ROOT, "target", "release", "examples", "seed-store")
SEED_RUNS = int(os.environ.get("SEED_RUNS", "1000000"))
BODIES = {"208 B": "body-208.json", "2 KB": "body-2k.json"}

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
    value: { body: "{{ trigger.body }}", seen: true }
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


def http_workflow(wf_id, token, response, port):
    """A workflow whose one step calls a downstream: the bare axum server, on loopback. The
    async one's runs are queued and the executor performs them, where the `ingest` and
    `three` workflows, whose steps need no I/O, run before their admission."""
    return f"""
id: {wf_id}
triggers:
  - type: webhook
    token: {token}
    response: {response}
steps:
  - id: call
    type: http
    method: POST
    url: http://127.0.0.1:{port}/hooks/downstream
    body: "{{{{ trigger.body }}}}"
"""


def lua_for(tmp, name):
    """A wrk script that POSTs the body in tests/data/NAME."""
    with open(os.path.join(ROOT, "tests", "data", name)) as f:
        body = f.read().strip()
    path = os.path.join(tmp, name + ".lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = [==[{body}]==]\n")
    return path


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


def start_server(wf_dir, data_dir, port, log=None):
    # The default log level unless one is asked for: what an operator gets.
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    if log:
        env["RUST_LOG"] = log
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        # One token from one client at full speed: the per-token rate limit (default
        # 5,000/s) is lifted to measure what the server can take.
        # --allow-private-network: the sync http step's downstream is on loopback.
        [BIN, "serve", "--workflows", wf_dir, "--data", data_dir, "--listen", f"127.0.0.1:{port}",
         "--rate-limit", "0", "--allow-private-network"],
        # Its log goes to a file beside the store, as an operator's would: a pipe nobody
        # reads fills up (64 KiB) and then blocks the server's next log line.
        stdout=subprocess.DEVNULL, stderr=open(data_dir + ".log", "wb"), env=env)
    url = f"http://127.0.0.1:{port}/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
            break
        except OSError:
            if proc.poll() is not None:
                with open(data_dir + ".log", errors="replace") as log_file:
                    raise SystemExit("the server stopped: " + log_file.read())
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


def drained(base, limit=120):
    """Waits until the executor has no queued or running runs left, so one load's backlog
    does not run during the next one's measurement."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        busy = [get_json(f"{base}/v1/runs?status={s}&limit=1")["items"] for s in ("queued", "running")]
        if not any(busy):
            return
        time.sleep(0.2)
    raise SystemExit(f"the executor's backlog did not drain within {limit} s")


def repeated(url, conns, lua, pid, tripline=True):
    """The load run REPEAT times (after Tripline's executor has drained, when it is
    Tripline), the median by rate with the range."""
    base = url.split("/hooks/", 1)[0]
    runs = []
    for _ in range(REPEAT):
        if tripline:
            drained(base)
        runs.append(wrk(url, conns, SECONDS, lua, pid))
    runs.sort(key=lambda r: r["rps"])
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


def pipeline(base, lua, pid, workflow, token):
    """A workflow's runs accepted under load at c=64 and finished: runs per second from the
    first request to the last run ended (not counting the workflow's runs from earlier loads)."""
    before = count_runs(base, workflow, "succeeded")
    t0 = time.perf_counter()
    wrk(f"{base}/hooks/{token}", 64, SECONDS, lua, pid)
    while True:
        if count_runs(base, workflow, "queued") == 0 and count_runs(base, workflow, "running") == 0:
            break
        if time.perf_counter() - t0 > SECONDS + 120:
            raise SystemExit(f"{workflow} runs did not finish within 120 s of the load")
        time.sleep(0.2)
    elapsed = time.perf_counter() - t0
    done = count_runs(base, workflow, "succeeded") - before
    return done, elapsed


def start_times(wf_dir, tmp, n=7):
    """Milliseconds from starting `tripline serve` on a fresh store to its first answer,
    N times: one start is at the mercy of the machine's noise (one of seven can take
    three times the others on this shared machine)."""
    times = []
    for i in range(n):
        proc, ms = start_server(wf_dir, os.path.join(tmp, f"start-{i}"), free_port())
        proc.terminate()
        proc.wait(timeout=30)
        times.append(ms)
    return sorted(times)


def start_axum(port):
    proc = subprocess.Popen([AXUM, f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 10:
                raise SystemExit("the axum reference did not start")
            time.sleep(0.02)


def deep(base, path, pages):
    """The path of page PAGES+1 of a listing, following its cursors."""
    def find():
        url, cursor = path, None
        for _ in range(pages):
            page = get_json(base + url + (f"&cursor={cursor}" if cursor else ""))
            cursor = page["next_cursor"]
            if not cursor:
                raise SystemExit(f"{path} has fewer than {pages} pages")
        return url + f"&cursor={cursor}"
    return find


def console_cookie(base):
    req = urllib.request.Request(f"{base}/login", data=b"key=bench", method="POST")
    opener = urllib.request.build_opener(NoRedirect())
    try:
        opener.open(req)
    except urllib.error.HTTPError as e:
        return e.headers["set-cookie"].split(";")[0]
    raise SystemExit("signing in to the console did not answer 303")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


LISTINGS = [
    ("/v1/runs?workflow=ingest, first page", "/v1/runs?workflow=ingest&limit=50"),
    ("/v1/runs?workflow=ingest&status=succeeded", "/v1/runs?workflow=ingest&status=succeeded&limit=50"),
    ("/v1/runs?workflow=ingest, page 21", "DEEP:/v1/runs?workflow=ingest&limit=50"),
    ("/v1/runs?workflow=ingest&text=bench-user", "/v1/runs?workflow=ingest&text=bench-user&limit=50"),
    ("/v1/runs?status=failed (every workflow)", "/v1/runs?status=failed&limit=50"),
    ("/v1/inbox?workflow=ingest&outcome=started", "/v1/inbox?workflow=ingest&outcome=started&limit=50"),
    ("/v1/inbox?workflow=ingest, page 21", "DEEP:/v1/inbox?workflow=ingest&limit=50"),
]
PAGES = [
    ("console: overview", "/"),
    ("console: runs", "/runs"),
    ("console: runs of a workflow, failed", "/runs?workflow=ingest&status=failed"),
    ("console: inbox of a workflow", "/inbox?workflow=ingest"),
    ("console: a workflow's page", "/workflows/ingest"),
]


def loaded(wf_dir, data_dir, lua):
    """Starts a server on the store in DATA_DIR and ingests into it at c=64 until its runs
    have run; answers (process, base URL, ingest result). The server is left running."""
    port = free_port()
    proc, _ = start_server(wf_dir, data_dir, port)
    base = f"http://127.0.0.1:{port}"
    try:
        ingest = wrk(f"{base}/hooks/bench-ingest-token-000000001", 64, SECONDS, lua, proc.pid)
        # The listings are timed once the executor has finished the ingested runs, not
        # while it shares the cores with them.
        drained(base)
    except BaseException:
        proc.terminate()
        raise
    return proc, base, ingest


def interleaved_gets(bases, paths, cookies=None, n=30):
    """For each measure, N rounds of one GET to each server in turn (one kept-alive
    connection each), so that the machine's noise falls on every store alike; answers
    {store: {measure: median ms}}. PATHS: [(measure, {store: path or callable})]."""
    import http.client
    conns = {k: http.client.HTTPConnection(b.split("//", 1)[1], timeout=30) for k, b in bases.items()}
    out = {k: {} for k in bases}
    try:
        for name, by_store in paths:
            resolved = {k: (p() if callable(p) else p) for k, p in by_store.items()}
            times = {k: [] for k in bases}
            for _ in range(n):
                for k, conn in conns.items():
                    headers = {"cookie": cookies[k]} if cookies else {}
                    t0 = time.perf_counter()
                    conn.request("GET", resolved[k], headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    times[k].append((time.perf_counter() - t0) * 1000)
                    if resp.status != 200:
                        raise SystemExit(f"GET {resolved[k]} answered {resp.status}")
            for k in bases:
                out[k][name] = sorted(times[k])[n // 2]
    finally:
        for conn in conns.values():
            conn.close()
    return out


def listing_times(bases):
    """The listings and console pages of every store, measured interleaved."""
    paths = [(n, {k: deep(b, p[5:], 20) if p.startswith("DEEP:") else p for k, b in bases.items()})
             for n, p in LISTINGS]
    times = interleaved_gets(bases, paths)
    cookies = {k: console_cookie(b) for k, b in bases.items()}
    pages = [(n, {k: p for k in bases}) for n, p in PAGES]
    for k, t in interleaved_gets(bases, pages, cookies, n=10).items():
        times[k].update(t)
    return times


def growth(tmp, wf_dir, lua):
    """The same traffic into an empty store, into one seeded with a hundredth of SEED_RUNS
    and into one seeded with SEED_RUNS. An empty store answers a filter for failed runs
    with an empty page, the seeded ones with a full page; the small one is the baseline
    that reads as many rows as the large one. Each store's ingest runs alone (the servers
    loaded before it idle); the listings are measured once all three have been loaded,
    request by request in turn across the three servers."""
    servers = {}
    seeding = {}
    stores = [("empty", 0), ("small", SEED_RUNS // 100), ("large", SEED_RUNS)]
    try:
        for name, count in stores:
            seeded = os.path.join(tmp, name)
            if count:
                t0 = time.perf_counter()
                subprocess.run([SEEDER, seeded, str(count)], check=True, stderr=subprocess.DEVNULL)
                seeding[name] = (time.perf_counter() - t0,
                                 sum(os.path.getsize(os.path.join(seeded, f)) for f in os.listdir(seeded)))
                # The seeding's 1.6 GB sit dirty in the page cache: flushed now (not counted
                # in the seeding's time), or the server's first checkpoint (an fsync of the
                # database file) pays for writing them back, a 660 ms stall that measures the
                # seeding, not the store.
                os.sync()
            servers[name] = loaded(wf_dir, seeded, lua)
        times = listing_times({name: base for name, (_, base, _) in servers.items()})
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        for name, _ in stores:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
    out = {name: (ingest, times[name]) for name, (_, _, ingest) in servers.items()}
    # What the heading reports: the large store's seeding.
    return out, *seeding["large"]


def change(a, b):
    return f"{(b / a - 1) * 100:+.0f}%"


def print_growth(tmp, wf_dir, lua):
    profiles, seed_secs, seeded_size = growth(tmp, wf_dir, lua)
    (ie, te), (is_, ts), (il, tl) = (profiles[k] for k in ("empty", "small", "large"))
    small = f"{SEED_RUNS // 100:,}"
    print(f"\nA store that has lived: {SEED_RUNS:,} messages and runs over 30 days (ten workflows; "
          f"seeded in {seed_secs:.0f} s, {seeded_size / 2**20:.0f} MiB) against an empty store and "
          f"one with {small}; each then takes {SECONDS} s of ingest at c=64 first (medians of 30 "
          f"GETs, 10 for pages, taken in turn from the three servers). The empty store has no failed runs, so its filters for them "
          f"answer empty pages; the {small} store answers the same full pages as the large one\n")
    print(f"| measure | empty store | {small} stored | {SEED_RUNS:,} stored | change from empty | change from {small} |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in (("rps", "requests/s"), ("p99", "p99 ms")):
        fmt = "{:.0f}" if key == "rps" else "{:.2f}"
        print(f"| async ingest, 208 B, c=64: {label} | {fmt.format(ie[key])} | {fmt.format(is_[key])} | "
              f"{fmt.format(il[key])} | {change(ie[key], il[key])} | {change(is_[key], il[key])} |")
    for name in te:
        print(f"| {name}: ms | {te[name]:.2f} | {ts[name]:.2f} | {tl[name]:.2f} | "
              f"{change(te[name], tl[name])} | {change(ts[name], tl[name])} |")


def main():
    tmp = tempfile.mkdtemp(prefix="tripline-bench-")
    wf_dir, data_dir = os.path.join(tmp, "workflows"), os.path.join(tmp, "data")
    os.makedirs(wf_dir)
    for name, text in WORKFLOWS.items():
        with open(os.path.join(wf_dir, name), "w") as f:
            f.write(text)
    luas = {k: lua_for(tmp, v) for k, v in BODIES.items()}
    lua = luas["208 B"]
    ref_port = free_port()
    ref = start_axum(ref_port)
    for wf_id, token, response in [("synchttp", "bench-synchttp-token-00000001", "sync"),
                                   ("relay", "bench-relay-token-00000000001", "async")]:
        with open(os.path.join(wf_dir, f"{wf_id}.yaml"), "w") as f:
            f.write(http_workflow(wf_id, token, response, ref_port))
    try:
        reference = {k: repeated(f"http://127.0.0.1:{ref_port}/hooks/x", 64, luas[k], ref.pid, tripline=False)
                     for k in BODIES}
        # The downstream's own time, as a client on this machine sees it.
        downstream = repeated(f"http://127.0.0.1:{ref_port}/hooks/downstream", 1, lua, ref.pid, tripline=False)
        starts = start_times(wf_dir, tmp)
        port = free_port()
        proc, _ = start_server(wf_dir, data_dir, port)
    except BaseException:
        ref.terminate()
        raise
    try:
        time.sleep(1.0)
        idle = rss_kb(proc.pid)
        base = f"http://127.0.0.1:{port}"
        rows = []
        peak = idle
        hook = f"{base}/hooks/bench-ingest-token-000000001"
        for c in (1, 8, 64):
            r = repeated(hook, c, lua, proc.pid)
            rows.append((f"async webhook ingest, 208 B, c={c}", r, reference["208 B"] if c == 64 else None))
        r = repeated(hook, 64, luas["2 KB"], proc.pid)
        rows.append(("async webhook ingest, 2 KB, c=64", r, reference["2 KB"]))
        r = repeated(f"{base}/hooks/bench-relay-token-00000000001", 64, lua, proc.pid)
        rows.append(("async webhook ingest, one http step (queued for the executor), 208 B, c=64", r,
                     reference["208 B"]))
        r = repeated(f"{base}/hooks/bench-sync-token-0000000001", 1, lua, proc.pid)
        rows.append(("sync reply, one transform, 208 B, c=1", r, None))
        synchttp = repeated(f"{base}/hooks/bench-synchttp-token-00000001", 1, lua, proc.pid)
        rows.append(("sync reply, one http step to the bare axum server, 208 B, c=1", synchttp, None))
        rows.append(("the same axum server called directly, c=1 (the step's own time)", downstream, None))
        peak = max([peak] + [row[1]["peak_rss_kb"] for row in rows])
        three_done, three_secs = pipeline(base, lua, proc.pid, "three", "bench-three-token-000000001")
        relay_done, relay_secs = pipeline(base, lua, proc.pid, "relay", "bench-relay-token-00000000001")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        ref.terminate()
        ref.wait(timeout=30)
    # What a log line per run costs: the same sync load with every run logged.
    port = free_port()
    proc, _ = start_server(wf_dir, os.path.join(tmp, "logged"), port, log="debug")
    try:
        r = repeated(f"http://127.0.0.1:{port}/hooks/bench-sync-token-0000000001", 1, lua, proc.pid)
        rows.append(("sync reply, as above, every run logged (RUST_LOG=debug)", r, None))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    size = os.path.getsize(BIN)
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"\nTripline benchmark: {cpu} cores, {SECONDS}s per load run, each run {REPEAT}x (median shown), wrk on the same machine (loopback)")
    print("store: SQLite WAL, synchronous=FULL: every 2xx is on disk (group commit); default log level (info)\n")
    print("| measure | requests/s | range | p50 ms | p99 ms | non-2xx | bare axum, same body: requests/s, p99 ms | Tripline / axum |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, r, ax in rows:
        ref_cell = f"{ax['rps']:.0f}, {ax['p99']:.2f}" if ax else ""
        ratio = f"{r['rps'] / ax['rps']:.2f}" if ax else ""
        print(f"| {name} | {r['rps']:.0f} | {r['range']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['non2xx']} | {ref_cell} | {ratio} |")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| `tripline serve` start to first answer (/healthz), median of {len(starts)} fresh stores (range) | "
          f"{starts[len(starts) // 2]:.0f} ms ({starts[0]:.0f}–{starts[-1]:.0f}) |")
    print(f"| resident memory, idle after start | {idle / 1024:.1f} MiB |")
    print(f"| resident memory, peak under load | {peak / 1024:.1f} MiB |")
    print(f"| three-step runs (transforms: run before their admission) accepted at c=64 and finished, end to end | "
          f"{three_done / three_secs:.0f} runs/s ({three_done} in {three_secs:.1f} s) |")
    print(f"| one-http-step runs (queued, the executor calls the bare axum server) accepted at c=64 and finished, end to end | "
          f"{relay_done / relay_secs:.0f} runs/s ({relay_done} in {relay_secs:.1f} s) |")
    print(f"| release binary size | {size / 1024 / 1024:.1f} MiB |")
    print(f"| sync reply with one http step: Tripline's time over the step's own, p50 / p99 | "
          f"{synchttp['p50'] - downstream['p50']:.3f} ms / {synchttp['p99'] - downstream['p99']:.3f} ms |")
    if SEED_RUNS:
        print_growth(tmp, wf_dir, lua)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
