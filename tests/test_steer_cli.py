"""Steering through the CLI (in-process): --queue, --after, queues, queue limit, pause,
resume, requeue, what status and show say, and every refusal changing nothing."""
from __future__ import annotations

import json

import pytest

from test_cli import drive, one_error

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

STATES = ["pending", "processing", "completed", "failed", "dead"]


def ok(cli, *args, input=None) -> str:
    result = cli(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def snapshot(cli):
    return cli.json("status"), cli.json("list", "--limit", "0"), cli.json("queues")


def refused(cli, *args, code, input=None) -> str:
    before = snapshot(cli)
    result = cli(*args, input=input)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    line = one_error(result)
    assert result.stdout == "" and snapshot(cli) == before
    return line


def job(cli, job_id) -> dict:
    """The job's fields as `show --json` gives them, less its runs and log path."""
    shown = cli.json("show", job_id)
    del shown["runs"], shown["log"]
    return shown


# -- enqueue --queue / --after -------------------------------------------------------------------

def test_a_job_has_a_queue_and_what_it_waits_for(cli):
    ok(cli, "enqueue", "--id", "build", "make")
    ok(cli, "enqueue", "--id", "deploy", "--queue", "prod", "--after", "build", "./deploy.sh")
    assert (job(cli, "build")["queue"], job(cli, "build")["after"]) == ("default", [])
    assert (job(cli, "deploy")["queue"], job(cli, "deploy")["after"]) == ("prod", ["build"])
    ok(cli, "enqueue", '{"id": "j", "command": "true", "queue": "prod", "after": ["build", "deploy"]}')
    assert job(cli, "j")["after"] == ["build", "deploy"]


def test_the_full_job_form_enqueues_again(cli):
    ok(cli, "enqueue", "--id", "a", "true")
    ok(cli, "enqueue", "--id", "b", "--after", "a", "--queue", "q", "true")
    again = {**job(cli, "b"), "id": "b2"}
    ok(cli, "enqueue", json.dumps(again))
    assert (job(cli, "b2")["queue"], job(cli, "b2")["after"]) == ("q", ["a"])


def test_after_takes_a_unique_prefix(cli):
    ok(cli, "enqueue", "--id", "build-2026-12-01", "make")
    ok(cli, "enqueue", "--id", "deploy", "--after", "build-2026", "true")
    assert job(cli, "deploy")["after"] == ["build-2026-12-01"]


def test_a_batch_may_name_its_own_jobs(cli):
    lines = [{"id": "fetch", "command": "true"}, {"id": "unpack", "command": "true", "after": ["fetch"]},
             {"id": "index", "command": "true", "after": ["unpack", "fetch"]}]
    ok(cli, "enqueue", "--file", "-", input="".join(json.dumps(line) + "\n" for line in lines))
    assert job(cli, "index")["after"] == ["fetch", "unpack"]
    assert [j["id"] for j in cli.json("list", "--state", "pending")] == ["fetch", "unpack", "index"]


def test_show_says_what_a_job_still_waits_for(cli, home):
    ok(cli, "enqueue", "--id", "a", "true")
    ok(cli, "enqueue", "--id", "b", "true")
    ok(cli, "enqueue", "--id", "c", "--after", "a", "--after", "b", "true")
    assert "waits for: a (pending), b (pending)" in ok(cli, "show", "c")
    drive(home, {"a": "completed"})
    assert "waits for: b (pending)" in ok(cli, "show", "c")


def test_a_job_after_a_dead_one_is_dead_at_once(cli, home):
    ok(cli, "enqueue", "--id", "a", "--max-retries", "0", "false")
    drive(home, {"a": "dead"})
    ok(cli, "enqueue", "--id", "b", "--after", "a", "true")
    assert (job(cli, "b")["state"], job(cli, "b")["last_error"], job(cli, "b")["attempts"]) == \
        ("dead", "dependency a is dead", 0)


@pytest.mark.parametrize("args, code, word", [
    (("--after", "nope", "true"), 1, "cannot wait for nope: no job with id or prefix 'nope'"),
    (("--after", "a", "--after", "nope", "true"), 1, "nothing was enqueued"),
    (("--after", "x", "true"), 1, "is ambiguous"),
    (("--id", "me", "--after", "me", "true"), 2, "job me waits for itself"),
    (("--after", "a/b", "true"), 2, "invalid job id 'a/b'"),
    (("--queue", "a b", "true"), 2, "invalid queue name 'a b'"),
    (("--queue", "q" * 65, "true"), 2, "invalid queue name"),
    (("--queue", "", "true"), 2, "invalid queue name ''"),
    (('{"command": "true", "after": 5}',), 2, "invalid after 5"),
    (('{"command": "true", "after": [5]}',), 2, "invalid job id 5"),
    (('{"command": "true", "queue": ["q"]}',), 2, "invalid queue name"),
])
def test_bad_queue_or_after_enqueues_nothing(cli, args, code, word):
    ok(cli, "enqueue", "--id", "a", "true")
    ok(cli, "enqueue", "--id", "x1", "true")
    ok(cli, "enqueue", "--id", "x2", "true")
    assert word in refused(cli, "enqueue", *args, code=code)


@pytest.mark.parametrize("lines, code, word", [
    ([{"id": "a", "command": "true", "after": ["b"]}, {"id": "b", "command": "true", "after": ["a"]}],
     2, "cycle: a -> b -> a"),
    ([{"id": "a", "command": "true", "after": ["a"]}], 2, "job a waits for itself"),
    ([{"id": "a", "command": "true"}, {"id": "b", "command": "true", "after": ["zzz"]}], 1, "nothing was enqueued"),
])
def test_a_bad_batch_enqueues_nothing(cli, lines, code, word):
    text = "".join(json.dumps(line) + "\n" for line in lines)
    assert word in refused(cli, "enqueue", "--file", "-", input=text, code=code)


# -- list --queue, queues, queue limit, pause, resume, status ----------------------------------

def test_list_and_queues_by_queue(cli, home):
    ok(cli, "enqueue", "--id", "d", "true")
    ok(cli, "enqueue", "--id", "m1", "--queue", "mail", "true")
    ok(cli, "enqueue", "--id", "m2", "--queue", "mail", "true")
    drive(home, {"m1": "completed"})
    assert [j["id"] for j in cli.json("list", "--queue", "mail")] == ["m2", "m1"]
    assert [j["id"] for j in cli.json("list", "--queue", "mail", "--state", "pending")] == ["m2"]
    assert cli.json("list", "--queue", "nowhere") == []
    assert "QUEUE" in ok(cli, "list")
    ok(cli, "queue", "limit", "mail", "2")
    assert cli.json("queues") == [
        {"name": "default", "counts": {**dict.fromkeys(STATES, 0), "pending": 1}, "limit": None, "paused": False},
        {"name": "mail", "counts": {**dict.fromkeys(STATES, 0), "pending": 1, "completed": 1}, "limit": 2,
         "paused": False},
    ]
    table = ok(cli, "queues")
    assert table.splitlines()[0].split() == ["QUEUE", *(s.upper() for s in STATES), "LIMIT", "PAUSED"]


def test_pause_and_resume_say_what_they_did_and_status_shows_it(cli):
    assert ok(cli, "pause", "mail", "downloads") == "Paused queues mail, downloads\n"
    assert cli.json("status")["paused"] == {"all": False, "queues": ["downloads", "mail"], "resumed": []}
    assert "Paused: downloads, mail." in ok(cli, "status")
    assert ok(cli, "pause") == "Paused every queue\n"
    assert ok(cli, "resume", "mail") == "Resumed queue mail\n"
    assert "Paused: every queue except mail." in ok(cli, "status")
    assert [(q["name"], q["paused"]) for q in cli.json("queues")] == [("mail", False)]
    assert ok(cli, "resume") == "Resumed every queue\n"
    assert "Nothing is paused." in ok(cli, "status")
    assert cli.json("queues") == []


def test_queue_limit_zero_removes_it(cli):
    assert ok(cli, "queue", "limit", "dl", "3") == "Queue dl: at most 3 jobs at once\n"
    assert ok(cli, "queue", "limit", "dl", "0") == "Queue dl: no limit\n"
    assert cli.json("queues") == []


@pytest.mark.parametrize("args, word", [
    (("queue", "limit", "dl", "-1"), "Invalid value for 'N'"),
    (("queue", "limit", "dl", "1.5"), "Invalid value for 'N'"),
    (("queue", "limit", "dl", "two"), "Invalid value for 'N'"),
    (("queue", "limit", "dl"), "Missing argument 'N'"),
    (("queue", "limit", "a/b", "1"), "invalid queue name 'a/b'"),
    (("pause", "*"), "invalid queue name '*'"),
    (("resume", "ok", "-"), "invalid queue name '-'"),
    (("list", "--queue", "a b"), "invalid queue name"),
    (("worker", "start", "--queue", "a b"), "invalid queue name"),
])
def test_bad_queue_settings_are_refused(cli, args, word):
    assert word in refused(cli, *args, code=2)


# -- requeue, dlq retry, delete ------------------------------------------------------------------

def test_requeue_moves_finished_jobs_back_and_the_chain_with_them(cli, home):
    ok(cli, "enqueue", "--id", "a", "--max-retries", "0", "true")
    ok(cli, "enqueue", "--id", "b", "--after", "a", "true")
    ok(cli, "enqueue", "--id", "done", "true")
    drive(home, {"a": "dead", "done": "completed"})
    assert job(cli, "b")["state"] == "dead"
    assert ok(cli, "requeue", "a", "done") == "Moved 2 jobs back to pending, and 1 that wait for them\n"
    assert [(job(cli, j)["state"], job(cli, j)["attempts"]) for j in ("a", "b", "done")] == [("pending", 0)] * 3
    drive(home, {"a": "dead"})
    assert ok(cli, "dlq", "retry", "a") == "Moved 1 job back to pending, and 1 that wait for them\n"


@pytest.mark.parametrize("args, code, word", [
    (("requeue", "p"), 1, "job p is pending, not completed or dead"),
    (("requeue", "p", "d"), 1, "job p is pending"),
    (("requeue", "nope"), 1, "no job with id or prefix 'nope'"),
    (("requeue",), 2, "Missing argument"),
    (("requeue", "../x"), 2, "invalid job id"),
    (("delete", "d"), 1, "job w waits for d"),
])
def test_requeue_and_delete_refusals_change_nothing(cli, home, args, code, word):
    ok(cli, "enqueue", "--id", "d", "true")
    ok(cli, "enqueue", "--id", "p", "true")
    drive(home, {"d": "completed"})
    ok(cli, "requeue", "d")  # pending again, and now waited for
    ok(cli, "enqueue", "--id", "w", "--after", "d", "true")
    drive(home, {"d": "completed"})
    ok(cli, "requeue", "d")
    assert word in refused(cli, *args, code=code)


def test_delete_takes_the_waiters_when_named_too(cli):
    ok(cli, "enqueue", "--id", "d", "true")
    ok(cli, "enqueue", "--id", "w", "--after", "d", "true")
    assert ok(cli, "delete", "d", "w") == "Deleted 2 jobs\n"
