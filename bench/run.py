#!/usr/bin/env python3
"""Measures every hot path of the OCTP backend with one command and prints one table.

    python3 bench/run.py                      # every backend, 1 and 32 connections, 10 s each
    python3 bench/run.py --duration 3 --backends sqlite
    python3 bench/run.py --only collectEvents --no-ceilings    # one operation, before/after a change

Builds the release server, starts it on SQLite and on PostgreSQL (a throwaway database), seeds
skewed data (two users with 100,000 events each among 10,000 light users), and drives each
operation with wrk (installed with apt-get when missing). Also measures the ceilings: a bare axum
handler returning a small JSON body, raw PostgreSQL ingest of the same 100-row batches
(multi-row INSERT and COPY) and raw first-assignment commits (one row and 32 rows per commit) from a
plain client. Last, a launch: 1,000,000 new players (--new-users) through a fresh server on each
backend, for its peak RSS. The clickhouse backend keeps events (and results) in ClickHouse
(--clickhouse-url; its rows are left out, and said so, when no ClickHouse answers there) and
everything else in PostgreSQL. Figures are printed, never asserted.
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRK_DIR = os.path.join(ROOT, "bench", "wrk")
RELEASE = os.path.join(ROOT, "target", "release")
HTTP_KEY = "defaulthttpkey"
ADMIN_KEY = "defaultadminkey"
PORT = 7391
BARE_PORT = 7399


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ensure_wrk():
    if shutil.which("wrk"):
        return
    log("installing wrk with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def build():
    log("building release binaries")
    subprocess.run(
        ["cargo", "build", "--release", "--bin", "octp-backend",
         "--example", "bare_axum", "--example", "pg_ingest_ceiling", "--example", "pg_assignment_ceiling",
         "--example", "live_subscribers"],
        cwd=ROOT, check=True)


def request(port, path, body, key=HTTP_KEY, method="POST"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=60) as response:
        return json.loads(response.read() or b"null")


def gql(port, query, variables=None, key=HTTP_KEY):
    reply = request(port, "/graphql", {"query": query, "variables": variables or {}}, key)
    if reply.get("errors"):
        raise RuntimeError(f"GraphQL errors: {reply['errors']}")
    return reply["data"]


class Process:
    def __init__(self, argv):
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_http(self, port, path):
        for _ in range(600):
            if self.process.poll() is not None:
                raise RuntimeError(f"exited early: {self.process.stderr.read().decode()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise RuntimeError("did not start listening")

    def peak_rss_mb(self):
        return self._status_mb("VmHWM:")

    def rss_mb(self):
        return self._status_mb("VmRSS:")

    def _status_mb(self, field):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wrk(port, path, body, connections, duration):
    """Runs wrk; returns (requests/s, p50 ms, p99 ms, errors, requests)."""
    env = dict(os.environ, BENCH_DIR=WRK_DIR, BENCH_PATH=path, BENCH_BODY_FILE="",
               BENCH_RUN=uuid.uuid4().hex[:8])
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as file:
        if body is not None:
            file.write(body if isinstance(body, bytes) else json.dumps(body).encode())
            env["BENCH_BODY_FILE"] = file.name
    try:
        threads = min(2, connections)
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
             "-s", os.path.join(WRK_DIR, "scenario.lua"), f"http://127.0.0.1:{port}{path}"],
            env=env, check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(file.name)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            rps, p50, p99, errors, requests = line.split()[1:]
            return float(rps), float(p50), float(p99), int(errors), int(requests)
    raise RuntimeError(f"wrk printed no result:\n{out}")


def rpc_body(payload):
    """The string-wrapped body every Nakama SDK sends."""
    return json.dumps(json.dumps(payload)).encode()


def events_batch(user, count=100):
    return [{"userId": user, "eventName": "level_up", "sessionId": "s-1",
             "properties": {"level": i, "platform": "ios", "coins": 120}} for i in range(count)]


def seed(port, heavy_events, light_users):
    log(f"seeding: 2 users × {heavy_events} events, {light_users} users × 5 events")
    gql(port, "mutation($i: ExperimentInput!) { upsertExperiment(input: $i) { id } }",
        {"i": {"id": "bench_exp", "name": "Bench", "cohorts": {"control": 0.5, "variant_b": 0.5}}}, ADMIN_KEY)
    set_config = ("mutation($e: String, $c: String, $config: JSON!) "
                  "{ updateRemoteConfig(experimentId: $e, cohort: $c, config: $config) { version } }")
    gql(port, set_config, {"config": {"coins": 100, "theme": "dark", "ads": True}}, ADMIN_KEY)
    for cohort in ("control", "variant_b"):
        gql(port, set_config, {"e": "bench_exp", "c": cohort, "config": {"tutorial": cohort}}, ADMIN_KEY)
    collect = "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted } }"
    for user in ("heavy-1", "heavy-2"):
        for start in range(0, heavy_events, 100):
            gql(port, collect, {"e": events_batch(user)})
    for first in range(0, light_users, 20):
        batch = [event for n in range(first, first + 20) for event in events_batch(f"light-{n}", 5)]
        gql(port, collect, {"e": batch})
    # Warm the caches the read scenarios are meant to hit.
    gql(port, "{ experimentAssignment(userId: \"bench-user\", experimentId: \"bench_exp\") { cohort } }")
    gql(port, "{ remoteConfig(userId: \"bench-user\") { version } }")
    request(port, f"/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}", rpc_body({"userId": "bench-user"}))


SCENARIOS = [
    ("health", "/graphql", {"query": "{ health { status version uptimeSeconds } }"}, 1),
    ("remoteConfig GraphQL (cached)", "/graphql",
     {"query": "query($u: String!) { remoteConfig(userId: $u) { source version config } }",
      "variables": {"u": "bench-user"}}, 1),
    ("remoteConfig GraphQL, RPC's fields", "/graphql",
     {"query": "query($u: String!) { remoteConfig(userId: $u) { userId experimentId cohort source version config "
               "assignments { userId experimentId cohort assignedAt } } }",
      "variables": {"u": "bench-user"}}, 1),
    ("FetchRemoteConfig RPC (cached)", f"/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}",
     rpc_body({"userId": "bench-user"}), 1),
    ("experimentAssignment (assigned)", "/graphql",
     {"query": "{ experimentAssignment(userId: \"bench-user\", experimentId: \"bench_exp\") { cohort } }"}, 1),
    ("remoteConfig RPC, new user each request", f"/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}",
     rpc_body({"userId": "__USER__"}), 1),
    ("GetExperimentAssignment RPC, new user", f"/v2/rpc/GetExperimentAssignment?http_key={HTTP_KEY}",
     rpc_body({"userId": "__USER__", "experimentId": "bench_exp"}), 1),
    ("experimentAssignment, new user each", "/graphql",
     {"query": "query($u: String!) { experimentAssignment(userId: $u, experimentId: \"bench_exp\") { cohort } }",
      "variables": {"u": "__USER__"}}, 1),
    ("collectEvents (100/batch)", "/graphql",
     {"query": "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted duplicates } }",
      "variables": {"e": events_batch("ingest-user")}}, 100),
    ("userEvents 50/page (user with 100k)", "/graphql",
     {"query": "{ userEvents(userId: \"heavy-1\", first: 50) { nodes { eventId eventName timestamp properties } pageInfo { endCursor } } }"}, 1),
    ("userEvents 50/page (light user)", "/graphql",
     {"query": "{ userEvents(userId: \"light-7\", first: 50) { nodes { eventId eventName timestamp properties } pageInfo { endCursor } } }"}, 1),
]


def check_reply(port, path, body):
    """One request first, so a broken scenario fails loudly instead of benchmarking errors."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = request(port, path, payload)
    if isinstance(reply, dict) and reply.get("errors"):
        raise RuntimeError(f"{path} answers with errors: {reply['errors']}")


def run_backend(backend, url, args, rows, extra=()):
    """`extra`: more server arguments (the ClickHouse backend's --events-url)."""
    server = Process([os.path.join(RELEASE, "octp-backend"), "--database-url", url,
                      "--bind", f"127.0.0.1:{PORT}", "--log-level", "warn", *extra])
    try:
        server.wait_http(PORT, "/healthz")
        seed(PORT, args.heavy_events, args.light_users)
        if backend == "postgres":
            # Seeding writes ~220k rows; without this, autovacuum and the next checkpoint run
            # during the measurements and decide the p99 of whichever rows they land on.
            psql(url, "VACUUM (ANALYZE) analytics_events")
            psql(url, "CHECKPOINT")
        for name, path, body, events_per_request in SCENARIOS:
            if args.only and not any(part in name for part in args.only):
                continue
            check_reply(PORT, path, body)
            for connections in args.connections:
                rps, p50, p99, errors, _ = wrk(PORT, path, body, connections, args.duration)
                rows.append({"operation": name, "backend": backend, "connections": connections,
                             "rps": rps, "p50": p50, "p99": p99, "rss": server.peak_rss_mb(),
                             "errors": errors, "events": rps * events_per_request if events_per_request > 1 else None})
                log(f"{backend:8} {name:38} c={connections:<3} {rps:10.0f} req/s  p99 {p99:.2f} ms")
    finally:
        server.stop()


def run_new_users(backend, url, args, rows):
    """A launch: `args.new_users` new players' first FetchRemoteConfig at 32 connections on a fresh
    server with the default cache budget; the row holds the server's peak and final RSS."""
    server = Process([os.path.join(RELEASE, "octp-backend"), "--database-url", url,
                      "--bind", f"127.0.0.1:{PORT}", "--log-level", "warn"])
    try:
        server.wait_http(PORT, "/healthz")
        gql(PORT, "mutation { upsertExperiment(input: {id: \"launch_a\", name: \"A\", cohorts: {a: 1, b: 1}}) { id } }",
            key=ADMIN_KEY)
        gql(PORT, "mutation { upsertExperiment(input: {id: \"launch_b\", name: \"B\", cohorts: {x: 1, y: 1, z: 1}}) { id } }",
            key=ADMIN_KEY)
        gql(PORT, "mutation { updateRemoteConfig(config: {coins: 100, difficulty: \"normal\"}) { version } }",
            key=ADMIN_KEY)
        path, body = f"/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}", rpc_body({"userId": "__USER__"})
        check_reply(PORT, path, body)
        served, errors, started = 0, 0, time.monotonic()
        while served < args.new_users:
            _, _, _, run_errors, requests = wrk(PORT, path, body, 32, 10)
            served += requests
            errors += run_errors
        elapsed = time.monotonic() - started
        rows.append({"operation": f"RSS after {served:,} new users", "backend": backend, "connections": 32,
                     "rps": served / elapsed, "p50": float("nan"), "p99": float("nan"), "rss": server.peak_rss_mb(),
                     "errors": errors, "events": None,
                     "note": f"{server.rss_mb():.0f} MB at the end; 2 experiments, default --cache-memory-mb"})
        log(f"{backend:8} {served:,} new users: peak RSS {server.peak_rss_mb():.0f} MB")
    finally:
        server.stop()


RESULTS_QUERY = """query($m: [MetricInput!]) { experimentResults(experimentId: "results_bench", metrics: $m) {
  users srm { ok pValue } metrics { cohorts { cohort users mean pValue chanceToBeatControl } } } }"""
RESULTS_METRICS = [
    {"key": "buyer", "eventName": "purchase", "kind": "CONVERSION"},
    {"key": "revenue", "eventName": "purchase", "kind": "SUM", "property": "amount"},
    {"key": "early_sessions", "eventName": "session_start", "kind": "COUNT", "windowHours": 72},
]


def seed_results(backend, url, users, events):
    """Assigned users and their events written straight into the database (seeding 2,000,000
    events through the API would take minutes and measure ingest, not analysis): half the users
    in each cohort, assigned over 30 days; 20 events per user, 50 % session_start, 5 % purchase
    with a numeric amount, 45 % level_up, from a day before to 13 days after the assignment."""
    log(f"seeding results: {users:,} assigned users, {events:,} events")
    if backend == "postgres":
        psql(url, f"""INSERT INTO user_experiment_assignments (user_id, experiment_id, cohort, assigned_at)
            SELECT 'ru-' || i, 'results_bench', CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END,
                   TIMESTAMPTZ '2026-10-01 00:00:00+00' + i * INTERVAL '25 seconds'
            FROM generate_series(0, {users - 1}) AS i""")
        psql(url, f"""INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties)
            SELECT 're-' || j, 'ru-' || (j % {users}),
                   CASE WHEN (j * 2654435761) % 100 < 5 THEN 'purchase'
                        WHEN (j * 2654435761) % 100 < 55 THEN 'session_start' ELSE 'level_up' END,
                   TIMESTAMPTZ '2026-10-01 00:00:00+00' + (j % {users}) * INTERVAL '25 seconds'
                     + ((j * 7919) % 1209600 - 86400) * INTERVAL '1 second',
                   now(),
                   CASE WHEN (j * 2654435761) % 100 < 5 THEN jsonb_build_object('amount', (j % 50) + 0.99)
                        ELSE jsonb_build_object('level', j % 100) END
            FROM generate_series(0::bigint, {events - 1}) AS j""")
        psql(url, "VACUUM (ANALYZE) analytics_events")
        psql(url, "VACUUM (ANALYZE) user_experiment_assignments")
        psql(url, "CHECKPOINT")
    else:
        import sqlite3
        path = url.removeprefix("sqlite://")
        connection = sqlite3.connect(path)
        # sqlx's text form of instants: RFC 3339 with +00:00, no fraction when there is none.
        instant = "strftime('%Y-%m-%dT%H:%M:%S+00:00', '{base}', '+' || ({seconds}) || ' seconds')"
        connection.executescript(f"""
            WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {users - 1})
            INSERT INTO user_experiment_assignments (user_id, experiment_id, cohort, assigned_at)
            SELECT 'ru-' || i, 'results_bench', CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END,
                   {instant.format(base="2026-10-01 00:00:00", seconds="i * 25")} FROM s;
            WITH RECURSIVE s(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM s WHERE j < {events - 1})
            INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties)
            SELECT 're-' || j, 'ru-' || (j % {users}),
                   CASE WHEN (j * 2654435761) % 100 < 5 THEN 'purchase'
                        WHEN (j * 2654435761) % 100 < 55 THEN 'session_start' ELSE 'level_up' END,
                   {instant.format(base="2026-09-30 00:00:00", seconds=f"(j % {users}) * 25 + (j * 7919) % 1209600")},
                   '2026-11-30T00:00:00+00:00',
                   CASE WHEN (j * 2654435761) % 100 < 5 THEN json_object('amount', (j % 50) + 0.99)
                        ELSE json_object('level', j % 100) END
            FROM s;
            ANALYZE;
        """)
        connection.commit()
        connection.close()


def seed_results_clickhouse(url, events_url, users, events):
    """The same users and events as `seed_results`: the assignments in PostgreSQL, copied to
    ClickHouse by `octp-backend events backfill` (as an operator would), the events straight
    into ClickHouse."""
    psql(url, f"""INSERT INTO user_experiment_assignments (user_id, experiment_id, cohort, assigned_at)
        SELECT 'ru-' || i, 'results_bench', CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END,
               TIMESTAMPTZ '2026-10-01 00:00:00+00' + i * INTERVAL '25 seconds'
        FROM generate_series(0, {users - 1}) AS i""")
    subprocess.run([os.path.join(RELEASE, "octp-backend"), "--database-url", url, "--events-url", events_url,
                    "--log-level", "warn", "events", "backfill"], check=True, stdout=subprocess.DEVNULL)
    base = 1790812800  # 2026-10-01 00:00:00 UTC
    clickhouse_query(events_url, f"""INSERT INTO events
        SELECT toInt64(intDiv(cityHash64(concat('re-', toString(j))), 2)), concat('re-', toString(j)),
               concat('ru-', toString(j % {users})), NULL,
               multiIf((j * 2654435761) % 100 < 5, 'purchase', (j * 2654435761) % 100 < 55, 'session_start', 'level_up'),
               toInt64(({base} + (j % {users}) * 25 + (j * 7919) % 1209600 - 86400) * 1000000),
               toInt64(1795996800000000),
               if((j * 2654435761) % 100 < 5, concat('{{"amount":', toString((j % 50) + 0.99), '}}'),
                  concat('{{"level":', toString(j % 100), '}}')),
               NULL, NULL, toUInt64(1)
        FROM (SELECT number AS j FROM system.numbers LIMIT {events})""")
    clickhouse_query(events_url, "OPTIMIZE TABLE events FINAL")


def clickhouse_query(events_url, sql):
    """Runs one statement on the database of a clickhouse:// URL through the HTTP interface."""
    host, database = events_url.removeprefix("clickhouse://").split("/", 1)
    request_ = urllib.request.Request(f"http://{host}/?database={database}", data=sql.encode(), method="POST")
    with urllib.request.urlopen(request_, timeout=600) as response:
        return response.read().decode()


def clickhouse_reachable(clickhouse_url):
    host = clickhouse_url.removeprefix("clickhouse://").split("/", 1)[0]
    try:
        urllib.request.urlopen(f"http://{host}/ping", timeout=2).read()
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


def run_results(backend, url, args, rows, workers=None, seeded=False, events_url=None):
    """experimentResults with three metrics over `args.results_users` assigned users and
    `args.results_events` events: the time of one analysis, best and median of several.
    `workers`: --analysis-parallel-workers (PostgreSQL), None for the database's default.
    `events_url`: events (and the analysis) in ClickHouse."""
    server = Process([os.path.join(RELEASE, "octp-backend"), "--database-url", url,
                      "--bind", f"127.0.0.1:{PORT}", "--log-level", "warn"]
                     + ([] if workers is None else ["--analysis-parallel-workers", str(workers)])
                     + ([] if events_url is None else ["--events-url", events_url]))
    try:
        server.wait_http(PORT, "/healthz")
        gql(PORT, "mutation { upsertExperiment(input: {id: \"results_bench\", name: \"Results\", "
                  "cohorts: {control: 1, treatment: 1}}) { id } }", key=ADMIN_KEY)
        if not seeded and events_url:
            seed_results_clickhouse(url, events_url, args.results_users, args.results_events)
        elif not seeded:
            seed_results(backend, url, args.results_users, args.results_events)
        timings = []
        for _ in range(7):
            started = time.monotonic()
            reply = gql(PORT, RESULTS_QUERY, {"m": RESULTS_METRICS}, ADMIN_KEY)
            timings.append((time.monotonic() - started) * 1000)
        users = reply["experimentResults"]["users"]
        timings.sort()
        median = timings[len(timings) // 2]
        label = "experimentResults, 3 metrics" + ("" if workers is None else f", {workers} worker")
        rows.append({"operation": label, "backend": backend, "connections": 1,
                     "rps": 1000 / median, "p50": median, "p99": timings[-1], "rss": server.peak_rss_mb(),
                     "errors": 0, "events": None,
                     "note": f"{users:,} users, {args.results_events:,} events; best {timings[0]:.0f} ms, "
                             f"median {median:.0f} ms of {len(timings)}"})
        log(f"{backend:8} experimentResults: median {median:.0f} ms, best {timings[0]:.0f} ms")
    finally:
        server.stop()


def run_coherence(url, args, rows):
    """Two instances on one PostgreSQL database with hour-long caches: after each config write on
    the first is answered, how long until the second serves it (LISTEN/NOTIFY)."""
    servers = [Process([os.path.join(RELEASE, "octp-backend"), "--database-url", url,
                        "--bind", f"127.0.0.1:{port}", "--log-level", "warn", "--config-cache-ttl-secs", "3600"])
               for port in (PORT, PORT + 1)]
    try:
        for server, port in zip(servers, (PORT, PORT + 1)):
            server.wait_http(port, "/healthz")
        write = "mutation($c: JSON!) { updateRemoteConfig(config: $c) { version } }"
        read = "{ remoteConfig(userId: \"coherence-user\") { config } }"
        delays = []
        for round_ in range(args.coherence_writes):
            gql(PORT, write, {"c": {"round": round_}}, ADMIN_KEY)
            written = time.monotonic()
            while gql(PORT + 1, read)["remoteConfig"]["config"].get("round") != round_:
                if time.monotonic() - written > 5:
                    raise RuntimeError("a write was not seen on the other instance within 5 s")
            delays.append((time.monotonic() - written) * 1000)
        delays.sort()
        p50, p99 = delays[len(delays) // 2], delays[min(len(delays) - 1, len(delays) * 99 // 100)]
        rows.append({"operation": "write on A seen on B (2 instances)", "backend": "postgres", "connections": 1,
                     "rps": float("nan"), "p50": p50, "p99": p99, "rss": servers[1].peak_rss_mb(),
                     "errors": 0, "events": None,
                     "note": f"{len(delays)} config writes, TTL 1 h; max {delays[-1]:.1f} ms, "
                             "includes one read round trip on B"})
        log(f"coherence: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(delays)} writes")
        pushed = subscription_delays(args.coherence_writes, write)
        if pushed:
            p50, p99 = pushed[len(pushed) // 2], pushed[min(len(pushed) - 1, len(pushed) * 99 // 100)]
            rows.append({"operation": "write on A pushed to a subscriber on B", "backend": "postgres",
                         "connections": 1, "rps": float("nan"), "p50": p50, "p99": p99,
                         "rss": servers[1].peak_rss_mb(), "errors": 0, "events": None,
                         "note": f"remoteConfigChanged over /graphql/ws, {len(pushed)} writes; max {pushed[-1]:.1f} ms"})
            log(f"pushed: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(pushed)} writes")
    finally:
        for server in servers:
            server.stop()


def run_live(backend, url, args, rows):
    """Ingest (collectEvents, 100 per batch) with 0 and with --live-subscribers liveEvents
    subscribers reading everything (examples/live_subscribers, on the same cores)."""
    server = Process([os.path.join(RELEASE, "octp-backend"), "--database-url", url,
                      "--bind", f"127.0.0.1:{PORT}", "--log-level", "warn"])
    name, path, body, per_request = next(s for s in SCENARIOS if s[0].startswith("collectEvents"))
    connections = max(args.connections)
    try:
        server.wait_http(PORT, "/healthz")
        for subscribers in (0, args.live_subscribers):
            note = "no subscribers"
            readers = None
            if subscribers:
                readers = subprocess.Popen(
                    [os.path.join(RELEASE, "examples", "live_subscribers"), str(PORT), ADMIN_KEY,
                     str(subscribers), str(args.duration + 1)],
                    stdout=subprocess.PIPE, text=True)
                started = time.monotonic()
                marker = 0
                ready = []
                reader = threading.Thread(target=lambda: ready.append(readers.stdout.readline()))
                reader.start()
                while reader.is_alive():
                    if time.monotonic() - started > 30:
                        raise RuntimeError("the live subscribers did not start")
                    gql(PORT, "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted } }",
                        {"e": [{"userId": "marker", "eventName": "marker", "eventId": f"marker-{marker}"}]})
                    marker += 1
                    reader.join(0.1)
                assert ready == ["LIVE\n"], ready
            rps, p50, p99, errors, _ = wrk(PORT, path, body, connections, args.duration)
            if readers:
                out, _ = readers.communicate(timeout=60)
                received, ended = out.split()[1], out.split()[3]
                note = (f"{subscribers} subscribers received {int(received):,} events in all "
                        f"({int(received) / subscribers / args.duration:,.0f}/s each); "
                        f"{ended} ended as too slow")
            rows.append({"operation": f"{name}, {subscribers} liveEvents subs", "backend": backend,
                         "connections": connections, "rps": rps, "p50": p50, "p99": p99,
                         "rss": server.peak_rss_mb(), "errors": errors, "events": rps * per_request, "note": note})
            log(f"{backend:8} ingest with {subscribers} subscribers: {rps * per_request:,.0f} events/s; {note}")
    finally:
        server.stop()


def subscription_delays(writes, write):
    """Milliseconds from each config write on the first instance (answered) to the
    remoteConfigChanged message on the second; [] without the `websockets` package."""
    try:
        from websockets.sync.client import connect
    except ImportError:
        log("skipping the subscription row: pip install websockets")
        return []
    delays = []
    with connect(f"ws://127.0.0.1:{PORT + 1}/graphql/ws", subprotocols=["graphql-transport-ws"]) as socket:
        socket.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {HTTP_KEY}"}}))
        assert json.loads(socket.recv(timeout=5))["type"] == "connection_ack"
        socket.send(json.dumps({"type": "subscribe", "id": "c", "payload": {
            "query": "subscription { remoteConfigChanged(userId: \"coherence-sub\") { config } }"}}))
        socket.recv(timeout=5)
        for round_ in range(writes):
            gql(PORT, write, {"c": {"pushed": round_}}, ADMIN_KEY)
            written = time.monotonic()
            while True:
                message = json.loads(socket.recv(timeout=5))
                if message["payload"]["data"]["remoteConfigChanged"]["config"].get("pushed") == round_:
                    break
            delays.append((time.monotonic() - written) * 1000)
    return sorted(delays)


def run_bare(args, rows):
    bare = Process([os.path.join(RELEASE, "examples", "bare_axum"), f"127.0.0.1:{BARE_PORT}"])
    try:
        bare.wait_http(BARE_PORT, "/")
        for connections in args.connections:
            rps, p50, p99, errors, _ = wrk(BARE_PORT, "/", None, connections, args.duration)
            rows.append({"operation": "ceiling: bare axum JSON handler", "backend": "-", "connections": connections,
                         "rps": rps, "p50": p50, "p99": p99, "rss": bare.peak_rss_mb(), "errors": errors, "events": None})
    finally:
        bare.stop()


def pg_ceiling(url, args, connections):
    out = subprocess.run([os.path.join(RELEASE, "examples", "pg_ingest_ceiling"), url,
                          str(max(3, args.duration)), str(connections)],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}


def pg_assignment_ceiling(url, args, connections):
    out = subprocess.run([os.path.join(RELEASE, "examples", "pg_assignment_ceiling"), url, "bench_exp",
                          str(max(3, args.duration)), str(connections)],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}


@contextlib.contextmanager
def fresh_database(server_url, prefix):
    """A new database on the PostgreSQL server of `server_url`, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    psql(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        psql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def psql(server_url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", server_url, "-c", sql], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--backends", default="sqlite,postgres,clickhouse",
                        help="sqlite, postgres, clickhouse (events in ClickHouse, the rest in PostgreSQL)")
    parser.add_argument("--clickhouse-url", default=os.environ.get("BENCH_CLICKHOUSE_URL", "clickhouse://127.0.0.1:18123"),
                        help="a ClickHouse server (HTTP interface) where throwaway databases may be created")
    parser.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="a PostgreSQL server where a throwaway database may be created")
    parser.add_argument("--heavy-events", type=int, default=100_000)
    parser.add_argument("--light-users", type=int, default=10_000)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--only", default="",
                        help="comma-separated parts of operation names to run (e.g. collectEvents); default: all")
    parser.add_argument("--no-ceilings", action="store_true", help="skip the bare axum and raw PostgreSQL ceilings")
    parser.add_argument("--results-users", type=int, default=100_000,
                        help="assigned users of the experimentResults row (0: skip the row)")
    parser.add_argument("--results-events", type=int, default=2_000_000)
    parser.add_argument("--coherence-writes", type=int, default=300,
                        help="config writes of the two-instance coherence row (0: skip the row)")
    parser.add_argument("--live-subscribers", type=int, default=10,
                        help="liveEvents subscribers of the ingest-with-subscribers rows (0: skip the rows)")
    parser.add_argument("--new-users", type=int, default=1_000_000,
                        help="new players driven through a fresh server to measure its RSS (0: skip)")
    args = parser.parse_args()
    args.only = [part for part in args.only.split(",") if part]
    args.connections = [int(c) for c in args.connections.split(",")]
    backends = args.backends.split(",")

    ensure_wrk()
    if not args.skip_build:
        build()
    rows, ceilings, assignment_ceilings = [], {}, {}
    if not args.no_ceilings:
        run_bare(args, rows)
    work = tempfile.mkdtemp(prefix="octp-bench-")
    try:
        if "sqlite" in backends:
            run_backend("sqlite", f"sqlite://{work}/bench.db", args, rows)
            if args.live_subscribers:
                run_live("sqlite", f"sqlite://{work}/live.db", args, rows)
            if args.new_users:
                run_new_users("sqlite", f"sqlite://{work}/launch.db", args, rows)
            if args.results_users:
                run_results("sqlite", f"sqlite://{work}/results.db", args, rows)
        if "postgres" in backends:
            with fresh_database(args.pg_url, "octp_bench") as database_url:
                run_backend("postgres", database_url, args, rows)
                for connections in sorted({1, 2}) if not args.no_ceilings else []:
                    ceilings[connections] = pg_ceiling(database_url, args, connections)
                for connections in args.connections if not args.no_ceilings else []:
                    assignment_ceilings[connections] = pg_assignment_ceiling(database_url, args, connections)
            if args.new_users:
                with fresh_database(args.pg_url, "octp_launch") as database_url:
                    run_new_users("postgres", database_url, args, rows)
            if args.live_subscribers:
                with fresh_database(args.pg_url, "octp_live") as database_url:
                    run_live("postgres", database_url, args, rows)
            if args.coherence_writes:
                with fresh_database(args.pg_url, "octp_coherence") as database_url:
                    run_coherence(database_url, args, rows)
            if args.results_users:
                with fresh_database(args.pg_url, "octp_results") as results_url:
                    run_results("postgres", results_url, args, rows)
                    # This machine's PostgreSQL has 2 cores: its default of 2 parallel workers
                    # plus the leader oversubscribe them.
                    run_results("postgres", results_url, args, rows, workers=1, seeded=True)
        if "clickhouse" in backends and not clickhouse_reachable(args.clickhouse_url):
            log(f"ClickHouse at {args.clickhouse_url} does not answer: no clickhouse rows "
                "(start one, e.g. as .ci/run does, or pass --clickhouse-url)")
        elif "clickhouse" in backends:
            events_database = f"octp_bench_{uuid.uuid4().hex[:12]}"
            events_url = f"{args.clickhouse_url.rstrip('/')}/{events_database}"
            try:
                with fresh_database(args.pg_url, "octp_bench_ch") as database_url:
                    run_backend("clickhouse", database_url, args, rows, extra=("--events-url", events_url))
                if args.results_users:
                    with fresh_database(args.pg_url, "octp_results_ch") as results_url:
                        run_results("clickhouse", results_url, args, rows, events_url=events_url + "_results")
            finally:
                for name in (events_database, events_database + "_results"):
                    clickhouse_query(f"{args.clickhouse_url.rstrip('/')}/default", f"DROP DATABASE IF EXISTS {name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, ceilings, assignment_ceilings, args)


def print_table(rows, ceilings, assignment_ceilings, args):
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; wrk with up to 2 threads on the same cores; "
          f"{args.duration} s per row")
    header = f"| {'operation':38} | {'backend':8} | {'conns':>5} | {'req/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'peak RSS MB':>11} | note"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|------")
    bare = {row["connections"]: row["rps"] for row in rows if row["operation"].startswith("ceiling")}
    for row in rows:
        notes = []
        if row["events"]:
            notes.append(f"{row['events']:,.0f} events/s")
            copy = ceilings.get(min(2, row["connections"]), {}).get("COPY")
            if row["backend"] == "postgres" and copy:
                notes.append(f"{row['events'] / copy:.0%} of raw COPY")
        if row["operation"].startswith("remoteConfig GraphQL") and bare.get(row["connections"]):
            notes.append(f"{row['rps'] / bare[row['connections']]:.0%} of bare axum")
        if row["errors"]:
            notes.append(f"{row['errors']} errors")
        if row.get("note"):
            notes.append(row["note"])
        print(f"| {row['operation']:38} | {row['backend']:8} | {row['connections']:>5} | {row['rps']:>9,.0f} | "
              f"{row['p50']:>7.2f} | {row['p99']:>7.2f} | {row['rss']:>11.1f} | {'; '.join(notes)}")
    for connections, figures in sorted(ceilings.items()):
        for mode, rate in figures.items():
            print(f"| {'ceiling: raw PostgreSQL ' + mode + ' (100 rows)':38} | {'postgres':8} | {connections:>5} | "
                  f"{rate / 100:>9,.0f} | {'-':>7} | {'-':>7} | {'-':>11} | {rate:,.0f} events/s")
    for connections, figures in sorted(assignment_ceilings.items()):
        for mode, rate in figures.items():
            rows_per_commit = "1 row" if mode == "SINGLE" else mode.removeprefix("BATCH") + " rows"
            print(f"| {'ceiling: raw PG assignments, ' + rows_per_commit + '/commit':38} | {'postgres':8} | "
                  f"{connections:>5} | {rate:>9,.0f} | {'-':>7} | {'-':>7} | {'-':>11} | rows/s, no HTTP")


if __name__ == "__main__":
    main()
