"""The dashboard's JSON API and its security, against a real `queuectl dashboard` process."""
from __future__ import annotations

import json
import os
import socket

import pytest

from conftest import job_state, run_cli, wait_until
from dashboard_server import Dashboard

pytestmark = pytest.mark.timeout(120)

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture
def dash(home):
    """A dashboard on a free port; stopped at the end, and it must never have printed a traceback."""
    started = []

    def start(*extra: str, env: dict | None = None) -> Dashboard:
        started.append(Dashboard(home, *extra, env=env))
        return started[-1]

    yield start
    for server in started:
        stderr = server.stop()
        assert "Traceback" not in stderr, stderr


@pytest.fixture
def server(dash):
    return dash()


def enqueue(home: str, *args: str) -> str:
    result = run_cli(home, "enqueue", "-q", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def make_dead(home: str, job_id: str) -> None:
    enqueue(home, "--id", job_id, "--max-retries", "0", "exit 3")
    result = run_cli(home, "worker", "start", "--burst", timeout=60)
    assert result.returncode == 0, result.stderr
    assert job_state(home, job_id)["state"] == "dead"


def assert_refused(response, status: int) -> None:
    assert response.status == status, (response.status, response.body)
    body = response.json()
    assert set(body) == {"error"} and 0 < len(body["error"]) <= 200, body
    for name, value in SECURITY_HEADERS.items():
        assert value in response.headers.get(name, ""), (name, response.headers)


# -- reading -------------------------------------------------------------------------------------

def test_overview_equals_status_json(home, server):
    for n in range(3):
        enqueue(home, f"echo {n}")
    enqueue(home, "--delay", "1h", "echo later")
    status = json.loads(run_cli(home, "status", "--json").stdout)
    overview = server.get_json("/api/overview")
    assert overview == status
    assert overview["pending"] == 4 and overview["total"] == 4


def test_every_response_carries_the_security_headers(server):
    for path in ("/", "/page.js", "/page.css", "/api/overview", "/nothing-here"):
        response = server.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert value in response.headers.get(name, ""), (path, name)
    csp = server.get("/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "http" not in csp  # nothing from another host


def test_the_page_is_self_contained(server):
    page = server.get("/").body.decode()
    assert 'name="viewport"' in page
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!--", "")
    script = server.get("/page.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    code = script.body.decode()
    # The SVG namespace is a name, never fetched; no other address may appear.
    assert "innerHTML" not in code and "http" not in code.replace('"http://www.w3.org/2000/svg"', "")


def test_jobs_are_paged_in_list_order_with_a_cursor(home, server):
    ids = [enqueue(home, "--id", f"job{n}", "--priority", str(n % 3), "true") for n in range(7)]
    expected = [job["id"] for job in json.loads(run_cli(home, "list", "--state", "pending", "--json").stdout)]
    seen, after, pages = [], "", 0
    while True:
        page = server.get_json(f"/api/jobs?state=pending&limit=3&after={after}")
        assert page["total"] == 7 and len(page["jobs"]) <= 3
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == expected and sorted(seen) == sorted(ids) and pages == 3
    newest = server.get_json("/api/jobs?limit=2")
    assert [job["id"] for job in newest["jobs"]] == ["job6", "job5"] and newest["total"] == 7


def walk(server, query: str) -> list:
    seen, after = [], ""
    while True:
        page = server.get_json(f"/api/jobs?{query}&limit=2&after={after}")
        seen += [job["id"] for job in page["jobs"]]
        if page["next"] is None:
            return seen
        after = page["next"]


@pytest.mark.parametrize("state", ["", "completed", "dead", "failed"])
def test_every_page_together_is_list_in_its_order(home, server, pools, state):
    assert run_cli(home, "config", "set", "backoff_base", "1000").returncode == 0  # retries wait
    for n in range(3):
        enqueue(home, "--id", f"ok{n}", "true")
        enqueue(home, "--id", f"bad{n}", "--max-retries", str(n and 5), "exit 1")  # bad0 dies at once
    enqueue(home, "--id", "later", "--delay", "1h", "true")
    pools.start(2)
    settled = {"pending": 1, "processing": 0, "completed": 3, "failed": 2, "dead": 1}
    wait_until(lambda: all(server.get_json("/api/overview")[k] == v for k, v in settled.items()),
               timeout=60, what=f"the states {settled}")
    assert pools.stop().returncode == 0
    listed = json.loads(run_cli(home, "list", "--limit", "0", "--json", *(["--state", state] if state else [])).stdout)
    assert listed, "the test needs jobs in this state"
    assert walk(server, f"state={state}") == [job["id"] for job in listed]


def test_jobs_that_wait_for_another_are_listed_after_the_claimable_ones(home, server):
    """The bug of round one: pending jobs with an unfinished parent (blocked) were missing."""
    enqueue(home, "--id", "parent", "--delay", "1h", "true")
    for n in range(3):
        enqueue(home, "--id", f"child{n}", "--after", "parent", "--priority", str(n % 2), "true")
        enqueue(home, "--id", f"free{n}", "--priority", str(n % 2), "true")
    enqueue(home, "--id", "other", "--queue", "q2", "--after", "parent", "true")
    listed = json.loads(run_cli(home, "list", "--state", "pending", "--limit", "0", "--json").stdout)
    assert len(listed) == 8
    assert walk(server, "state=pending") == [job["id"] for job in listed]
    by_queue = json.loads(run_cli(home, "list", "--state", "pending", "--queue", "default", "--limit", "0",
                                  "--json").stdout)
    assert walk(server, "state=pending&queue=default") == [job["id"] for job in by_queue]
    assert walk(server, "state=pending&queue=q2") == ["other"]


@pytest.mark.parametrize("state", ["", "completed", "dead"])
def test_jobs_by_queue_are_list_by_queue(home, server, state):
    for n in range(3):
        enqueue(home, "--id", f"a{n}", "--queue", "alpha", "true")
        enqueue(home, "--id", f"b{n}", "--queue", "beta", "true")
    make_dead(home, "dead-default")
    enqueue(home, "--id", "dead-alpha", "--queue", "alpha", "--max-retries", "0", "exit 3")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    for queue in ("alpha", "beta", "default"):
        listed = json.loads(run_cli(home, "list", "--queue", queue, "--limit", "0", "--json",
                                    *(["--state", state] if state else [])).stdout)
        page = server.get_json(f"/api/jobs?queue={queue}&state={state}")
        assert page["total"] is None  # counting one queue's jobs would read them all
        assert walk(server, f"state={state}&queue={queue}") == [job["id"] for job in listed]


def test_search_by_id_prefix(home, server):
    for job_id in ("build-1", "build-2", "bundle", "test-1"):
        enqueue(home, "--id", job_id, "true")
    make_dead(home, "build-3")
    found = server.get_json("/api/jobs?prefix=build")
    assert [job["id"] for job in found["jobs"]] == ["build-1", "build-2", "build-3"]
    assert found["total"] is None  # a count of matches would cost a scan: not given
    dead = server.get_json("/api/jobs?prefix=bu&state=dead")
    assert [job["id"] for job in dead["jobs"]] == ["build-3"]
    assert server.get_json("/api/dlq")["jobs"][0]["id"] == "build-3"


def test_one_job_by_id_or_unique_prefix(home, server):
    enqueue(home, "--id", "alpha-1", "echo a")
    enqueue(home, "--id", "alpha-2", "echo b")
    assert server.get_json("/api/jobs/alpha-1") == job_state(home, "alpha-1")
    assert server.get_json("/api/jobs/alpha-2")["command"] == "echo b"
    assert_refused(server.get("/api/jobs/alpha"), 404)  # ambiguous
    assert_refused(server.get("/api/jobs/nope"), 404)
    assert_refused(server.get("/api/jobs/.hidden"), 400)


def test_ids_and_queue_names_are_decoded_from_the_path(home, server):
    """The page sends encodeURIComponent(id): the : and @ of an id arrive as %3A and %40."""
    enqueue(home, "--id", "build:42@ci", "--queue", "ci:main", "--max-retries", "0", "exit 1")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    assert server.get_json("/api/jobs/build%3A42%40ci")["id"] == "build:42@ci"
    assert server.get_json("/api/jobs/build%3A42%40ci/log")["id"] == "build:42@ci"
    assert server.post("/api/jobs/build%3A42%40ci/retry").json()["state"] == "pending"
    assert server.post("/api/queues/ci%3Amain/pause").json()["paused"]["queues"] == ["ci:main"]
    assert_refused(server.get("/api/jobs/%ff%fe"), 400)
    assert_refused(server.get("/api/jobs/..%2F..%2Fetc%2Fpasswd"), 400)


def test_the_log_tail_is_bounded_and_can_be_followed(home, server):
    job_id = enqueue(home, "--id", "chatty", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo THE-END")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    size = os.path.getsize(os.path.join(home, "logs", f"{job_id}.log"))
    tail = server.get_json("/api/jobs/chatty/log")
    assert tail["size"] == size and tail["to"] == size and tail["finished"] is True
    assert len(tail["text"].encode()) == 64 * 1024 and "THE-END" in tail["text"]
    start = server.get_json("/api/jobs/chatty/log?from=0")
    assert start["from"] == 0 and start["to"] == 64 * 1024 and start["text"].startswith("=== run 1")
    rest = server.get_json(f"/api/jobs/chatty/log?from={size}")
    assert rest["text"] == "" and rest["from"] == size


def test_a_log_piece_never_cuts_a_character(home, server):
    enqueue(home, "--id", "wide", "for i in $(seq 40000); do printf 'é'; done")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    piece = server.get_json("/api/jobs/wide/log?from=0")
    assert "\ufffd" not in piece["text"]
    following = server.get_json(f"/api/jobs/wide/log?from={piece['to']}")
    assert "\ufffd" not in following["text"] and following["text"].startswith("é")


def test_workers_lists_the_live_workers(home, pools, server):
    assert server.get_json("/api/workers") == []
    pids = pools.start(2)
    found = wait_until(lambda: server.get_json("/api/workers") if len(server.get_json("/api/workers")) == 2 else None,
                       timeout=30, what="two workers in /api/workers")
    assert {w["pid"] for w in found} <= set(pids) and found[0]["job"] is None


def test_queues_is_queues_json_with_the_pauses(home, server):
    enqueue(home, "--queue", "mail", "true")
    enqueue(home, "--queue", "video", "true")
    assert run_cli(home, "pause", "mail").returncode == 0
    assert run_cli(home, "queue", "limit", "video", "2").returncode == 0
    found = server.get_json("/api/queues")
    assert found["queues"] == json.loads(run_cli(home, "queues", "--json").stdout)
    assert found["paused"] == json.loads(run_cli(home, "status", "--json").stdout)["paused"]
    assert [(q["name"], q["limit"], q["paused"]) for q in found["queues"]] == [("mail", None, True), ("video", 2, False)]


def finished_runs(home: str) -> None:
    """Runs in two queues: completed, failed and dead ones."""
    enqueue(home, "--queue", "mail", "true")
    enqueue(home, "--queue", "mail", "--max-retries", "0", "exit 1")
    enqueue(home, "--queue", "video", "sleep 0.2")
    enqueue(home, "true")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0


def without_clock(data: dict) -> dict:
    """stats --json less what moves with the clock between two calls."""
    return {**data, "since": None, "until": None, "runs": {**data["runs"], "per_minute": None},
            "now": {**data["now"], "oldest_due_seconds": None}}


@pytest.mark.parametrize("query", [[], ["--since", "30m"], ["--queue", "mail"], ["--since", "1d", "--queue", "video"]])
def test_stats_is_stats_json(home, server, query):
    finished_runs(home)
    cli = json.loads(run_cli(home, "stats", "--json", *query).stdout)
    params = "&".join(f"{query[i][2:]}={query[i + 1]}" for i in range(0, len(query), 2))
    api = server.get_json("/api/stats?" + params)
    assert without_clock(api) == without_clock(cli)
    assert api["runs"]["total"] > 0


def test_runs_per_minute_counts_the_last_hour(home, server):
    finished_runs(home)
    chart = server.get_json("/api/runs-per-minute")
    minutes = chart["minutes"]
    assert len(minutes) == 60 and minutes == sorted(minutes, key=lambda m: m["minute"])
    assert minutes[-1]["minute"][:16] == chart["until"][:16]  # the last bar is the current minute
    by_outcome = json.loads(run_cli(home, "stats", "--json").stdout)["runs"]["by_outcome"]
    assert sum(m["succeeded"] for m in minutes) == by_outcome["completed"] == 3
    assert sum(m["failed"] for m in minutes) == by_outcome["failed"] == 1
    mail = server.get_json("/api/runs-per-minute?queue=mail")["minutes"]
    assert (sum(m["succeeded"] for m in mail), sum(m["failed"] for m in mail)) == (1, 1)


def test_metrics_is_queuectl_metrics(home, server):
    finished_runs(home)
    assert run_cli(home, "pause", "video").returncode == 0
    response = server.get("/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.body.decode() == run_cli(home, "metrics").stdout
    assert 'queuectl_paused{queue="video"} 1' in response.body.decode()


@pytest.mark.parametrize("query", [
    "/api/jobs?state=bogus", "/api/jobs?limit=0", "/api/jobs?limit=201", "/api/jobs?limit=ten",
    "/api/jobs?after=%%%", "/api/jobs?after=WzEsMiwzLDRd", "/api/jobs?after=" + "W" * 4000,
    "/api/jobs?prefix=-x", "/api/jobs?prefix=" + "a" * 200, "/api/jobs/x/log?from=-1",
    "/api/jobs?" + "&".join(f"k{n}=v" for n in range(30)),
    "/api/jobs?queue=two%20words", "/api/jobs?state=pending&queue=-x", "/api/stats?since=soon",
    "/api/stats?since=40d", "/api/stats?since=2999-01-01T00:00:00Z", "/api/stats?queue=a/b",
    "/api/runs-per-minute?queue=%20", "/api/jobs?state=pending&after=WzIsMSwyLDNd",
])
def test_bad_input_is_a_short_json_error(home, server, query):
    enqueue(home, "--id", "x", "true")
    response = server.get(query)
    assert 400 <= response.status < 500
    assert_refused(response, response.status)


def test_runs_per_minute_reads_exactly_the_last_sixty_minutes_across_an_hour(home):
    """The store's read for the chart: a window that starts in one hour and ends in the next."""
    from queuectl.models import Run
    from queuectl.store.sqlite import SqliteStore as Store

    for n in range(6):
        enqueue(home, "--id", f"r{n}", "--queue", "q" if n % 2 else "default", "true")
    store = Store.open(os.path.join(home, "queue.db"))
    try:
        moment = (1_800_000_000 // 3600) * 3600 + 5 * 60 + 30  # 5.5 minutes into an hour
        ended = {"r0": moment, "r1": moment - 59 * 60, "r2": moment - 60 * 60, "r3": moment - 30 * 60,
                 "r4": moment - 6 * 60, "r5": moment + 60}  # r2: a minute too old; r5: not yet
        for _ in ended:
            job = store.claim_next("w", 2_000_000_000)
            outcome = "failed" if job.id == "r3" else "completed"
            store.record_run(job, Run(1, "w", "h", ended[job.id] - 1, ended[job.id], outcome, 0, None, ""), job.queue)
        rows = store.runs_per_minute(moment)
        assert sorted(rows) == sorted([(int(ended["r0"] // 60), "completed", 1), (int(ended["r1"] // 60), "completed", 1),
                                       (int(ended["r3"] // 60), "failed", 1), (int(ended["r4"] // 60), "completed", 1)])
        assert store.runs_per_minute(moment, queue="q") == [(int(ended["r1"] // 60), "completed", 1),
                                                            (int(ended["r3"] // 60), "failed", 1)]
    finally:
        store.close()


# -- actions -------------------------------------------------------------------------------------

def test_retry_moves_a_dead_job_to_pending(home, server):
    make_dead(home, "broken")
    response = server.post("/api/jobs/broken/retry")
    assert response.status == 200, response.body
    assert response.json()["state"] == "pending"
    state = job_state(home, "broken")
    assert state["state"] == "pending" and state["attempts"] == 0
    assert_refused(server.post("/api/jobs/broken/retry"), 409)  # not dead any more


def test_delete_removes_the_job_and_its_log(home, server):
    make_dead(home, "gone")
    log = os.path.join(home, "logs", "gone.log")
    assert os.path.exists(log)
    assert server.post("/api/jobs/gone/delete").json() == {"deleted": "gone"}
    assert run_cli(home, "show", "gone").returncode == 1 and not os.path.exists(log)
    assert_refused(server.post("/api/jobs/gone/delete"), 404)


def cli_error(home: str, *args: str) -> str:
    result = run_cli(home, *args)
    assert result.returncode == 1 and result.stderr.startswith("Error: "), result
    return result.stderr.strip()[len("Error: "):]


def test_cancel_a_waiting_job_and_refuse_a_finished_one_as_the_cli_does(home, server):
    enqueue(home, "--id", "waits", "--delay", "1h", "true")
    response = server.post("/api/jobs/waits/cancel")
    assert response.status == 200, response.body
    assert response.json()["stopping"] is False
    state = job_state(home, "waits")
    assert (state["state"], state["last_error"], state["attempts"]) == ("dead", "cancelled", 0)
    refused = server.post("/api/jobs/waits/cancel")
    assert_refused(refused, 409)
    assert refused.json()["error"] == cli_error(home, "cancel", "waits")


def test_cancel_stops_a_running_job(home, server, pools):
    enqueue(home, "--id", "long", "sleep 60")
    pools.start(1)
    wait_until(lambda: job_state(home, "long")["state"] == "processing", timeout=30, what="long to start")
    response = server.post("/api/jobs/long/cancel")
    assert response.status == 200 and response.json()["stopping"] is True, response.body
    wait_until(lambda: job_state(home, "long")["state"] == "dead", timeout=30, what="long to be cancelled")
    assert job_state(home, "long")["last_error"] == "cancelled"


def test_requeue_a_finished_job_and_refuse_a_waiting_one_as_the_cli_does(home, server):
    enqueue(home, "--id", "done", "true")
    assert run_cli(home, "worker", "start", "--burst", timeout=60).returncode == 0
    response = server.post("/api/jobs/done/requeue")
    assert response.status == 200 and response.json()["state"] == "pending", response.body
    assert job_state(home, "done")["attempts"] == 0
    refused = server.post("/api/jobs/done/requeue")
    assert_refused(refused, 409)
    assert refused.json()["error"] == cli_error(home, "requeue", "done")
    assert_refused(server.post("/api/jobs/nobody/requeue"), 404)


def test_pause_resume_and_limit_queues(home, server):
    enqueue(home, "--queue", "mail", "true")
    paused = lambda: json.loads(run_cli(home, "status", "--json").stdout)["paused"]  # noqa: E731
    assert server.post("/api/queues/mail/pause").json()["paused"] == paused() == {
        "all": False, "queues": ["mail"], "resumed": []}
    assert server.post("/api/queues/mail/resume").status == 200 and paused()["queues"] == []
    assert server.post("/api/pause").status == 200 and paused()["all"] is True
    assert server.post("/api/queues/mail/resume").status == 200 and paused()["resumed"] == ["mail"]
    assert server.post("/api/resume").status == 200 and paused() == {"all": False, "queues": [], "resumed": []}
    assert server.post("/api/queues/mail/limit?value=3").json() == {"queue": "mail", "limit": 3}
    limits = lambda: {q["name"]: q["limit"] for q in json.loads(run_cli(home, "queues", "--json").stdout)}  # noqa: E731
    assert limits() == {"mail": 3}
    for bad in ("/api/queues/mail/limit?value=-1", "/api/queues/mail/limit?value=x",
                "/api/queues/mail/limit", "/api/queues/mail/limit?value=1000001",
                "/api/queues/-mail/limit?value=1", "/api/queues/-mail/pause"):
        assert_refused(server.post(bad), 400)
    assert server.post("/api/queues/mail/limit?value=0").json() == {"queue": "mail", "limit": None}
    assert limits() == {"mail": None}


def test_actions_are_post_only(home, server):
    make_dead(home, "dead1")
    assert_refused(server.get("/api/jobs/dead1/retry"), 405)
    assert_refused(server.request("PUT", "/api/jobs/dead1/retry"), 405)
    assert_refused(server.request("DELETE", "/api/jobs/dead1"), 405)
    assert job_state(home, "dead1")["state"] == "dead"


# -- security ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},                               # a foreign page, even with the token
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"X-CSRF-Token": ""},                                            # no token, no Sec-Fetch-Site
    {"X-CSRF-Token": "wrong"},
], ids=["foreign-origin", "null-origin", "cross-site", "same-site", "no-csrf", "wrong-csrf"])
def test_actions_from_anywhere_but_the_page_are_refused(home, server, headers):
    make_dead(home, "victim")
    assert_refused(server.post("/api/jobs/victim/retry", headers=headers), 403)
    assert_refused(server.post("/api/jobs/victim/delete", headers=headers), 403)
    assert job_state(home, "victim")["state"] == "dead"


def test_same_origin_fetch_metadata_is_enough_without_the_csrf_token(home, server):
    make_dead(home, "mine")
    response = server.request("POST", "/api/jobs/mine/retry", headers={
        "Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{server.port}"})
    assert response.status == 200, response.body
    assert job_state(home, "mine")["state"] == "pending"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}",
                                  "127.0.0.2:{port}", ""],
                         ids=["foreign", "foreign-port", "wrong-port", "lookalike", "other-loopback", "missing"])
def test_a_host_header_that_does_not_name_the_dashboard_is_refused(server, host):
    for path in ("/", "/api/overview", "/api/session"):
        assert_refused(server.get(path, host=host.format(port=server.port)), 403)


def test_an_action_with_a_foreign_host_header_is_refused(home, server):
    make_dead(home, "rebound")
    assert_refused(server.post("/api/jobs/rebound/retry", host=f"rebind.example:{server.port}"), 403)
    assert job_state(home, "rebound")["state"] == "dead"


def test_a_database_that_cannot_be_read_is_a_503_not_a_traceback(home, server):
    assert server.get("/api/overview").status == 200
    db = os.path.join(home, "queue.db")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    with open(db, "wb") as handle:
        handle.write(b"this is not a database" * 200)
    response = server.get("/api/overview")
    assert_refused(response, 503)
    assert "database" in response.json()["error"]


def test_loopback_names_are_accepted(server):
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"LOCALHOST:{server.port}"):
        assert server.get("/api/overview", host=host).status == 200


@pytest.mark.parametrize("path", [
    "/../queue.db", "/%2e%2e/queue.db", "/..%2fqueue.db", "/page.js/../../queue.db", "//etc/passwd",
    "/page.html", "/web/page.js", "/queue.db", "/config.json", "/%2fetc%2fpasswd", "/page.js%00.css",
    "/api/jobs/..%2f..%2fqueue.db/log", "/api/jobs/../../config.json", "/./page.js", "/PAGE.JS",
])
def test_path_traversal_serves_nothing(home, server, path):
    enqueue(home, "--id", "x", "echo secret-text")
    response = server.get(path)
    assert response.status in (400, 404), (path, response.status)
    assert b"secret-text" not in response.body and b"SQLite" not in response.body and b"root:" not in response.body


def test_oversized_requests_are_refused(home, server):
    make_dead(home, "big")
    too_big = server.request("POST", "/api/jobs/big/retry", headers={
        "X-CSRF-Token": server.get_json("/api/session")["csrf"], "Content-Length": str(10 * 1024 * 1024)})
    assert_refused(too_big, 413)
    assert_refused(server.get("/api/jobs?prefix=" + "a" * 10_000), 414)
    assert_refused(server.get("/api/overview", headers={"X-Filler": "y" * 70_000}), 431)
    assert_refused(server.get("/api/overview", headers={f"X-H{n}": "1" for n in range(120)}), 431)
    assert job_state(home, "big")["state"] == "dead"
    assert server.get("/api/overview").status == 200  # and it still serves


def test_read_only_refuses_every_action(home, dash):
    make_dead(home, "keep")
    server = dash("--read-only")
    assert server.get_json("/api/session")["read_only"] is True
    for action in ("/api/jobs/keep/retry", "/api/jobs/keep/delete", "/api/jobs/keep/requeue",
                   "/api/jobs/keep/cancel", "/api/pause", "/api/resume", "/api/queues/default/pause",
                   "/api/queues/default/limit?value=1"):
        assert_refused(server.post(action, headers={"Sec-Fetch-Site": "same-origin"}), 403)
    assert json.loads(run_cli(home, "queues", "--json").stdout)[0]["limit"] is None
    assert json.loads(run_cli(home, "status", "--json").stdout)["paused"]["all"] is False
    assert job_state(home, "keep")["state"] == "dead"
    assert server.get_json("/api/jobs/keep")["state"] == "dead"


def test_a_token_is_required_once_set(home, dash):
    server = dash("--token", "s3cret-token")
    assert_refused(server.get("/api/overview"), 401)
    assert_refused(server.get("/"), 401)
    assert_refused(server.get("/api/overview", headers={"Authorization": "Bearer wrong"}), 401)
    assert_refused(server.get("/?token=wrong"), 401)
    assert server.get("/%5cevil.example?token=s3cret-token").headers["location"] == "/"  # not off-site
    assert server.get("/api/overview", headers={"Authorization": "Bearer s3cret-token"}).status == 200
    once = server.get("/?token=s3cret-token")
    assert once.status == 303 and once.headers["location"] == "/"  # the token leaves the address bar
    cookie = once.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = server.get("/", headers={"Cookie": cookie.split(";")[0]})
    assert page.status == 200 and b"<!doctype html>" in page.body
    make_dead(home, "t1")
    headers = {"Cookie": cookie.split(";")[0], "Sec-Fetch-Site": "same-origin"}
    assert server.request("POST", "/api/jobs/t1/retry", headers=headers).status == 200
    assert_refused(server.request("POST", "/api/jobs/t1/delete", headers={"Sec-Fetch-Site": "same-origin"}), 401)


def test_the_token_can_come_from_the_environment(dash):
    server = dash(env={"QUEUECTL_DASHBOARD_TOKEN": "from-env"})
    assert_refused(server.get("/api/overview"), 401)
    assert server.get("/api/overview", headers={"Authorization": "Bearer from-env"}).status == 200


def test_a_non_loopback_address_needs_a_token(home):
    result = run_cli(home, "dashboard", "--host", "0.0.0.0", "--port", "0", timeout=30,
                     env={"QUEUECTL_DASHBOARD_TOKEN": ""})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: --host 0.0.0.0 is reachable") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_a_non_loopback_address_with_a_token_warns_and_checks_the_host(home, dash):
    server = dash("--host", "0.0.0.0", "--token", "tok")
    auth = {"Authorization": "Bearer tok"}
    assert server.get("/api/overview", headers=auth).status == 200
    assert server.get("/api/overview", headers=auth, host=f"{socket.gethostname()}:{server.port}").status == 200
    assert_refused(server.get("/api/overview", headers=auth, host=f"rebind.example:{server.port}"), 403)
    assert_refused(server.get("/api/overview"), 401)
    stderr = server.stop()
    assert "Warning: 0.0.0.0 is reachable from other machines" in stderr


def test_a_busy_port_is_an_error(home, server):
    result = run_cli(home, "dashboard", "--port", str(server.port), timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{server.port}")


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "x"], ["--token", "has space"], ["--token", ""],
                                  ["--token", "semi;colon"], ["--token", "a+b"]])
def test_bad_options_are_usage_errors(home, args):
    result = run_cli(home, "dashboard", *args, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("Error:") and "Traceback" not in result.stderr


def test_sigterm_stops_it_cleanly(server):
    server.process.send_signal(15)
    assert server.process.wait(timeout=20) == 0


def test_keep_alive_responses_are_not_held_back(server):
    """A watching browser reuses one connection: no response may wait for a delayed ACK (Nagle's
    algorithm held every body back 40 ms before TCP_NODELAY)."""
    import http.client
    import statistics
    import time

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    took = []
    try:
        for _ in range(21):
            started = time.perf_counter()
            conn.request("GET", "/api/overview")
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Connection") != "close"
            response.read()
            took.append(time.perf_counter() - started)
    finally:
        conn.close()
    assert statistics.median(took[1:]) < 0.025, took
