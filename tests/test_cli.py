"""The CLI in-process, for everything that needs no worker: enqueue, inspection, removal, config.

Jobs are moved through processing/completed/failed/dead with the Store API, as a worker would.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time

import pytest
from click.testing import CliRunner

from conftest import open_home_store, run_cli
from queuectl import config
from queuectl.cli import cli as cli_group
from queuectl.home import QueueHome
from queuectl.store.sqlite import SqliteStore as Store
from queuectl.timeutil import parse_iso

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

JOB_FIELDS = ["id", "command", "state", "attempts", "max_retries", "priority", "timeout", "run_at", "cwd",
              "created_at", "updated_at", "exit_code", "last_error", "queue", "after"]
STATES = ["pending", "processing", "completed", "failed", "dead"]
WORKER = "test-worker"


# -- helpers -------------------------------------------------------------------------------------

def enqueue(cli, *args, input=None) -> str:
    result = cli("enqueue", *args, input=input)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def show(cli, job_id) -> dict:
    """The job's fields from `show --json`, which adds its `runs` and `log` after them."""
    data = cli.json("show", job_id)
    assert list(data)[-2:] == ["runs", "log"]
    return {key: value for key, value in data.items() if key not in ("runs", "log")}


def listed(cli, *args) -> list:
    return [job["id"] for job in cli.json("list", "--limit", "0", *args)]


def snapshot(cli):
    """Everything a refused command must leave as it was."""
    return cli.json("status"), cli.json("list", "--limit", "0"), cli.json("config", "get")


def one_error(result) -> str:
    """The single `Error:` line of a failed command (and no traceback)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def refused(cli, *args, code, input=None) -> str:
    """Run a command that must fail with `code`, one error line, and the queue unchanged."""
    before = snapshot(cli)
    result = cli(*args, input=input)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    line = one_error(result)
    assert result.stdout == ""
    assert snapshot(cli) == before
    return line


def drive(home, outcomes: dict, at: float | None = None) -> None:
    """Move jobs as a worker would: {id: "processing" | "completed" | "failed" | "dead"}.

    Every due job is claimed; those not named are given back untouched. `at` is the time the
    outcome is recorded (to make old jobs)."""
    store = open_home_store(home)
    try:
        others, left = [], dict(outcomes)
        while left:
            job = store.claim_next(WORKER, time.time())
            assert job is not None, f"not due: {sorted(left)}"
            outcome = left.pop(job.id, None)
            moment = time.time() if at is None else at
            if outcome is None:
                others.append(job)
            elif outcome == "completed":
                assert store.mark_completed(job, WORKER, moment)
            elif outcome == "failed":
                assert store.mark_failed(job, WORKER, 1, "exit code 1", moment + 3600, moment)
            elif outcome == "dead":
                assert store.mark_dead(job, WORKER, 1, "exit code 1: it broke", moment)
            else:
                assert outcome == "processing"
        for job in others:
            assert store.release(job, WORKER, time.time())
    finally:
        store.close()


def log_file(home, job_id, text="output\n") -> str:
    path = QueueHome(home).log_path(job_id)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def seconds_between(job, later, earlier):
    return parse_iso(job[later]) - parse_iso(job[earlier])


# -- the queue home ------------------------------------------------------------------------------

@pytest.mark.sqlite_only
def test_home_and_files_are_private(cli, home):
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        enqueue(cli, "--id", "a", "echo secret")
        assert cli("config", "set", "max_retries", "5").exit_code == 0
        store = Store.open(QueueHome(home).db_path)  # keep the WAL files around to check them
        try:
            store.insert([], time.time())
            modes = {name: stat.S_IMODE(os.stat(os.path.join(home, name)).st_mode) for name in os.listdir(home)}
        finally:
            store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert modes.pop("logs") == 0o700
    assert modes.pop("queue.db") == 0o600 and modes.pop("config.json") == 0o600
    assert set(modes) <= {"queue.db-wal", "queue.db-shm"}, modes
    assert all(mode == 0o600 for mode in modes.values()), modes


@pytest.mark.sqlite_only
def test_home_from_the_environment_then_the_user_home(tmp_path, home, monkeypatch):
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(cli_group, ["enqueue", "--id", "e", "true"], env={"QUEUECTL_HOME": home}).exit_code == 0
    assert os.path.exists(os.path.join(home, "queue.db"))
    other = str(tmp_path / "other")
    result = runner.invoke(cli_group, ["--home", other, "list", "--json"], env={"QUEUECTL_HOME": home})
    assert json.loads(result.stdout) == []  # --home wins
    user = tmp_path / "user"
    user.mkdir()
    result = runner.invoke(cli_group, ["status"], env={"QUEUECTL_HOME": None, "HOME": str(user)})
    assert result.exit_code == 0, result.stderr
    assert (user / ".queuectl" / "queue.db").exists()
    assert sorted(os.listdir(tmp_path)) == ["other", "qhome", "user"]  # nothing in the current directory


@pytest.mark.sqlite_only
def test_corrupt_config_is_reported_with_its_path(cli, home):
    enqueue(cli, "--id", "a", "true")
    path = QueueHome(home).config_path
    with open(path, "w") as handle:
        handle.write("{not json")
    for args in (("status",), ("config", "get"), ("config", "set", "max_retries", "1"), ("enqueue", "true")):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert one_error(result).startswith(f"Error: corrupt config file {path}")
    with open(path) as handle:
        assert handle.read() == "{not json"
    assert listed(cli) == ["a"]


@pytest.mark.parametrize("args", [("status",), ("list",), ("show", "a"), ("enqueue", "true"), ("config", "get")])
@pytest.mark.sqlite_only
def test_a_database_that_is_not_sqlite_is_reported_with_its_path(cli, home, args):
    QueueHome(home).ensure()
    path = QueueHome(home).db_path
    garbage = b"this is not a database\n" * 200
    with open(path, "wb") as handle:
        handle.write(garbage)
    result = cli(*args)
    if args[0] == "config":  # needs no database
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    assert one_error(result) == f"Error: database {path} is damaged: file is not a database; run `queuectl check`"
    with open(path, "rb") as handle:
        assert handle.read() == garbage


def test_a_home_that_cannot_be_used_is_reported_with_its_path(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    db_dir = tmp_path / "db-dir"
    (db_dir / "queue.db").mkdir(parents=True)
    config_dir = tmp_path / "config-dir"
    (config_dir / "config.json").mkdir(parents=True)
    for home, message, code in [
        (not_a_dir, f"Error: queue home {not_a_dir} is not a directory", 2),
        (db_dir, f"Error: cannot open database {db_dir / 'queue.db'}", 1),
        (config_dir, f"Error: corrupt config file {config_dir / 'config.json'}", 1),
    ]:
        result = CliRunner().invoke(cli_group, ["--home", str(home), "status"])
        assert result.exit_code == code
        assert one_error(result).startswith(message), result.stderr


# -- enqueue: the forms ------------------------------------------------------------------------

def test_enqueue_json_positional(cli):
    assert enqueue(cli, '{"id":"job1","command":"sleep 2"}') == "Enqueued job job1\n"
    job = show(cli, "job1")
    assert list(job) == JOB_FIELDS
    assert (job["command"], job["state"], job["attempts"], job["max_retries"], job["priority"], job["timeout"]) \
        == ("sleep 2", "pending", 0, 3, 0, 0)
    assert (job["exit_code"], job["last_error"]) == (None, None)
    assert job["run_at"] == job["created_at"] == job["updated_at"]
    for key in ("run_at", "created_at", "updated_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", job[key])
    assert abs(parse_iso(job["created_at"]) - time.time()) < 60


def test_enqueue_plain_string_generates_an_id(cli):
    out = enqueue(cli, "echo hello world")
    job_id = re.fullmatch(r"Enqueued job ([0-9a-f]{16})\n", out).group(1)
    assert show(cli, job_id)["command"] == "echo hello world"


@pytest.mark.parametrize("text", ["[ -f x ] && make", "echo {}", "42 things", "./run.sh --flag"])
def test_enqueue_strings_that_are_commands(cli, text):
    job_id = enqueue(cli, "-q", text).strip()
    assert show(cli, job_id)["command"] == text


@pytest.mark.parametrize("option", ["--cmd", "--command"])
def test_enqueue_cmd_option_takes_any_command(cli, option):
    enqueue(cli, "--id", "grp", option, "{ echo a; echo b; }")
    assert show(cli, "grp")["command"] == "{ echo a; echo b; }"


def test_enqueue_cmd_fills_in_a_json_job(cli):
    enqueue(cli, '{"id":"j","priority":3}', "--cmd", "true")
    assert (show(cli, "j")["command"], show(cli, "j")["priority"]) == ("true", 3)


def test_enqueue_command_file(cli, tmp_path):
    path = tmp_path / "cmd.sh"
    path.write_text("for f in *; do\n  echo \"$f\"\ndone\n")
    enqueue(cli, "--id", "script", "--command-file", str(path))
    assert show(cli, "script")["command"] == "for f in *; do\n  echo \"$f\"\ndone"


def test_enqueue_job_file(cli, tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"id": "fromfile", "command": "make", "priority": -2, "max_retries": 0}))
    assert enqueue(cli, "--job-file", str(path)) == "Enqueued job fromfile\n"
    job = show(cli, "fromfile")
    assert (job["command"], job["priority"], job["max_retries"]) == ("make", -2, 0)


JSONL = '{"id":"l1","command":"echo 1"}\n\n{"id":"l2","command":"echo 2","priority":-1}\n{"command":"echo 3"}\n'
ARRAY = json.dumps([{"id": "l1", "command": "echo 1"}, {"id": "l2", "command": "echo 2", "priority": -1},
                    {"command": "echo 3"}])


@pytest.mark.parametrize("text", [JSONL, ARRAY], ids=["json-lines", "json-array"])
@pytest.mark.parametrize("from_stdin", [False, True], ids=["path", "stdin"])
def test_enqueue_many_from_a_file(cli, tmp_path, text, from_stdin):
    if from_stdin:
        out = enqueue(cli, "--file", "-", input=text)
    else:
        path = tmp_path / "jobs"
        path.write_text(text)
        out = enqueue(cli, "--file", str(path))
    assert out == "Enqueued 3 jobs\n"
    jobs = cli.json("list", "--state", "pending")
    assert [j["command"] for j in jobs] == ["echo 2", "echo 1", "echo 3"]
    assert jobs[0]["id"] == "l2" and jobs[1]["id"] == "l1"


def test_enqueue_many_quiet_and_json(cli):
    out = enqueue(cli, "--file", "-", "-q", input=JSONL)
    assert out.splitlines()[:2] == ["l1", "l2"] and len(out.splitlines()) == 3
    result = cli("enqueue", "--file", "-", "--json", "--if-absent", input=JSONL.replace("echo 3", "echo 4"))
    jobs = json.loads(result.stdout)
    assert [j["command"] for j in jobs] == ["echo 4"] and list(jobs[0]) == JOB_FIELDS


def test_enqueue_many_flags_apply_to_every_job(cli):
    enqueue(cli, "--file", "-", "--priority", "7", "--max-retries", "1", input=JSONL)
    jobs = cli.json("list")
    assert {(j["priority"], j["max_retries"]) for j in jobs} == {(7, 1)}


def test_enqueue_many_empty_file_enqueues_nothing(cli):
    assert enqueue(cli, "--file", "-", input="") == "Enqueued 0 jobs\n"
    assert enqueue(cli, "--file", "-", input="\n  \n") == "Enqueued 0 jobs\n"
    assert cli.json("status")["total"] == 0


def test_enqueue_many_if_absent_skips_existing_ids(cli):
    enqueue(cli, "--id", "l1", "original")
    assert enqueue(cli, "--file", "-", "--if-absent", input=JSONL) == "Enqueued 2 jobs (1 existed already)\n"
    assert show(cli, "l1")["command"] == "original"
    assert cli.json("status")["pending"] == 3


@pytest.mark.parametrize("text, where", [
    ('{"command":"a"}\n{"command":"b"}\n\n{"command":"c"\n', "standard input line 4"),
    ('{"command":"a"}\n{"command":"b","bogus":1}\n', "standard input line 2"),
    ('{"command":"a"}\n[1]\n', "standard input line 2"),
    ('{"command":"a"}\n{"id":"../x","command":"b"}\n', "standard input line 2"),
    ('{"command":"a"}\n{"command":"a","state":"dead"}\n', "standard input line 2"),
    ('{"command":"a"}\n{"command":"b","delay":"soon"}\n', "standard input line 2"),
    ('{"command":"a"}, {"id":"b"\n"command":"b"}\n', "standard input line 1"),
    ('[{"command":"a"}, {"command":""}]', "standard input item 2"),
    ('[{"command":"a"}, "echo b"]', "standard input item 2"),
    ('[{"command":"a"},', "standard input"),
])
def test_enqueue_many_is_all_or_none_and_names_the_bad_line(cli, text, where):
    enqueue(cli, "--id", "before", "true")
    assert where in refused(cli, "enqueue", "--file", "-", input=text, code=2)


def test_enqueue_many_names_the_bad_line_of_a_file(cli, tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"command":"a"}\n{"command":"b"}\nnot json\n')
    assert f"{path} line 3" in refused(cli, "enqueue", "--file", str(path), code=2)


@pytest.mark.parametrize("text", [
    '{"id":"x","command":"a"}\n{"id":"taken","command":"b"}\n',   # an id that exists
    '{"id":"y","command":"a"}\n{"id":"y","command":"b"}\n',       # an id given twice
    '{"id":"x","command":"a"}\n' * 150 + '{"id":"taken","command":"b"}\n',
])
def test_enqueue_many_with_a_taken_id_enqueues_nothing(cli, text):
    enqueue(cli, "--id", "taken", "true")
    message = refused(cli, "enqueue", "--file", "-", input=text, code=1)
    assert "nothing was enqueued" in message


def test_enqueue_many_names_the_taken_id(cli):
    enqueue(cli, "--id", "taken", "true")
    message = refused(cli, "enqueue", "--file", "-", input='{"id":"taken","command":"b"}\n', code=1)
    assert message == "Error: job id already exists: taken; nothing was enqueued"


# -- enqueue: the options ----------------------------------------------------------------------

def test_enqueue_options(cli, workdir):
    enqueue(cli, "--id", "opt", "--max-retries", "5", "--priority", "-3", "--timeout", "30", "--cwd", workdir,
            "make")
    job = show(cli, "opt")
    assert (job["max_retries"], job["priority"], job["timeout"], job["cwd"]) == (5, -3, 30, workdir)


def test_enqueue_every_json_key(cli, workdir):
    enqueue(cli, json.dumps({"id": "all", "command": "make", "max_retries": 1, "priority": -7, "delay": "10m",
                             "timeout": "2m", "cwd": workdir}))
    job = show(cli, "all")
    assert (job["max_retries"], job["priority"], job["timeout"], job["cwd"]) == (1, -7, 120, workdir)
    assert seconds_between(job, "run_at", "created_at") == pytest.approx(600, abs=0.002)


def test_flags_beat_json_fields(cli):
    enqueue(cli, "--priority", "5", "--id", "flag", '{"id":"json","command":"x","priority":1}')
    assert listed(cli) == ["flag"]
    assert show(cli, "flag")["priority"] == 5


@pytest.mark.parametrize("delay, seconds", [("30", 30), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400),
                                            ("1.5", 1.5)])
def test_enqueue_delay(cli, delay, seconds):
    out = enqueue(cli, "--id", "later", "--delay", delay, "true")
    job = show(cli, "later")
    assert seconds_between(job, "run_at", "created_at") == pytest.approx(seconds, abs=0.002)
    assert out == f"Enqueued job later, runs at {job['run_at']}\n"


@pytest.mark.parametrize("given, stored", [
    ("2030-01-01T00:00:00Z", "2030-01-01T00:00:00.000Z"),
    ("2030-01-01T02:00:00+02:00", "2030-01-01T00:00:00.000Z"),
    ("2030-01-01T00:00:00", "2030-01-01T00:00:00.000Z"),      # no offset: UTC
    ("2030-01-01T00:00:00.5Z", "2030-01-01T00:00:00.500Z"),
])
def test_enqueue_run_at(cli, given, stored):
    enqueue(cli, "--id", "at", "--run-at", given, "true")
    assert show(cli, "at")["run_at"] == stored
    enqueue(cli, '{"id":"at2","command":"true","run_at":"%s"}' % given)
    assert show(cli, "at2")["run_at"] == stored


@pytest.mark.parametrize("given, stored", [("30", 30), ("5m", 300), ("1.5", 1.5), ("0", 0)])
def test_enqueue_timeout(cli, given, stored):
    enqueue(cli, "--id", "t", "--timeout", given, "true")
    assert show(cli, "t")["timeout"] == stored


def test_enqueue_timeout_null_in_json(cli):
    enqueue(cli, '{"id":"t","command":"true","timeout":null}')
    assert show(cli, "t")["timeout"] is None  # no limit, as 0 is


def test_enqueue_cwd_defaults_to_the_current_directory(cli, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    enqueue(cli, "--id", "here", "true")
    os.mkdir(os.path.join(workdir, "sub"))
    enqueue(cli, "--id", "sub", "--cwd", "sub", "true")
    assert show(cli, "here")["cwd"] == workdir
    assert show(cli, "sub")["cwd"] == os.path.join(workdir, "sub")


@pytest.mark.parametrize("given", ['"run_at":"2030-01-01T00:00:00Z"', '"delay":"1d"'])
def test_a_delay_flag_replaces_the_time_in_the_json(cli, given):
    enqueue(cli, "--delay", "5m", '{"id":"j","command":"x",%s}' % given)
    assert seconds_between(show(cli, "j"), "run_at", "created_at") == pytest.approx(300, abs=0.002)


@pytest.mark.parametrize("given", ['"run_at":"2031-01-01T00:00:00Z"', '"delay":"1d"'])
def test_a_run_at_flag_replaces_the_time_in_the_json(cli, given):
    enqueue(cli, "--run-at", "2030-01-01T00:00:00Z", '{"id":"j","command":"x",%s}' % given)
    line = '{"id":"k","command":"x",%s}\n' % given
    enqueue(cli, "--run-at", "2030-01-01T00:00:00Z", "--file", "-", input=line)
    assert show(cli, "j")["run_at"] == show(cli, "k")["run_at"] == "2030-01-01T00:00:00.000Z"


def test_enqueue_if_absent_changes_nothing(cli):
    enqueue(cli, "--id", "once", "--priority", "1", "first")
    before = snapshot(cli)
    result = cli("enqueue", "--if-absent", "--id", "once", "--priority", "9", "second")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == "Job once exists already (pending); nothing changed\n"
    assert snapshot(cli) == before
    assert cli("enqueue", "--if-absent", "-q", "--id", "once", "x").stdout == "once\n"


def test_enqueue_quiet_prints_only_the_id(cli):
    assert enqueue(cli, "-q", "--id", "quiet", "true") == "quiet\n"
    assert re.fullmatch(r"[0-9a-f]{16}\n", enqueue(cli, "--quiet", "true"))


def test_enqueue_json_prints_the_job(cli):
    job = json.loads(enqueue(cli, "--json", "--id", "j", "--priority", "2", "true"))
    assert list(job) == JOB_FIELDS
    assert job == show(cli, "j")


def test_max_retries_and_timeout_default_from_config_and_are_frozen(cli):
    cli("config", "set", "max_retries", "7")
    cli("config", "set", "timeout", "45")
    enqueue(cli, "--id", "a", "true")
    cli("config", "reset")
    enqueue(cli, "--id", "b", "true")
    assert (show(cli, "a")["max_retries"], show(cli, "a")["timeout"]) == (7, 45)
    assert (show(cli, "b")["max_retries"], show(cli, "b")["timeout"]) == (3, 0)


# -- enqueue: the full job form ----------------------------------------------------------------

def test_the_full_job_form_enqueues_again(cli):
    enqueue(cli, "--id", "orig", "--priority", "4", "--max-retries", "2", "--timeout", "9", "--delay", "1h",
            "echo again")
    full = show(cli, "orig")
    full["id"] = "copy"
    full["created_at"] = full["updated_at"] = "2000-01-01T00:00:00Z"  # ignored: a new job is new
    enqueue(cli, json.dumps(full))
    copy = show(cli, "copy")
    for key in ("command", "state", "attempts", "max_retries", "priority", "timeout", "run_at", "cwd"):
        assert copy[key] == full[key], key
    assert parse_iso(copy["created_at"]) > parse_iso("2020-01-01T00:00:00Z")


@pytest.mark.parametrize("extra, word", [
    ({"state": "completed"}, "state"),
    ({"state": "dead"}, "state"),
    ({"state": "processing"}, "state"),
    ({"attempts": 1}, "attempts"),
    ({"exit_code": 0}, "exit_code"),
    ({"last_error": "boom"}, "last_error"),
    ({"bogus": 1}, "unknown key 'bogus'; valid keys: id, command"),
    ({"user": "bob"}, "unknown key 'user'"),
    ({"worker_id": None}, "unknown key 'worker_id'"),
])
def test_the_full_job_form_refuses_other_than_initial_values(cli, extra, word):
    line = refused(cli, "enqueue", json.dumps({"id": "j", "command": "true", **extra}), code=2)
    assert word in line


# -- enqueue: refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("args, word", [
    (['{"id":"x"'], "malformed JSON"),
    (['{"id":"x","command":"a",}'], "malformed JSON"),
    (["[1, 2]"], "must be a JSON object, not an array"),
    (['"just a string"'], "must be a JSON object"),
    (["42"], "must be a JSON object, not a number"),
    (['{"command":5}'], "invalid command"),
    (['{"command":"a\\u0000b"}'], "NUL"),
    (['{"command":"x","priority":true}'], "invalid priority"),
    (['{"command":"x","priority":NaN}'], "malformed JSON"),
    (['{"command":"x","max_retries":1.5}'], "invalid max_retries"),
    (['{"command":"x","timeout":"abc"}'], "invalid timeout"),
    (['{"command":"x","run_at":"never"}'], "invalid run_at"),
    (['{"command":"x","delay":"1y"}'], "invalid delay"),
    (['{"command":"x","id":5}'], "invalid job id"),
    (["--id", "../x", "echo"], "invalid job id"),
    (["--id", ".x", "echo"], "invalid job id"),
    (["--id=-x", "echo"], "invalid job id"),
    (["--id", "a" * 129, "echo"], "invalid job id"),
    (["--id", "a b", "echo"], "invalid job id"),
    (["--id", "a\tb", "echo"], "invalid job id"),
    (["--priority", "abc", "echo"], "'--priority'"),
    (["--priority", "1.5", "echo"], "'--priority'"),
    (["--priority", "10000000000", "echo"], "invalid priority"),
    (["--max-retries", "-1", "echo"], "invalid max_retries"),
    (["--max-retries", "1000001", "echo"], "invalid max_retries"),
    (["--max-retries", "x", "echo"], "'--max-retries'"),
    (["--delay", "5x", "echo"], "invalid delay"),
    (["--delay=-5", "echo"], "invalid delay"),
    (["--delay", "99999d", "echo"], "invalid delay"),
    (["--timeout", "abc", "echo"], "invalid timeout"),
    (["--timeout", "400d", "echo"], "invalid timeout"),
    (["--run-at", "tomorrow", "echo"], "invalid run_at"),
    (["--run-at", "3025-01-01T00:00:00Z", "echo"], "invalid run_at"),
    (["--delay", "5m", "--run-at", "2030-01-01T00:00:00Z", "echo"], "not both"),
    ([], "no command given"),
    ([""], "invalid command"),
    (["   "], "invalid command"),
    (["echo", "--cmd", "ls"], "the command is given twice"),
    (["--cmd", "a", "--command-file", "/dev/null"], "only one of"),
    (["--cwd", "/nonexistent/queuectl-dir", "echo"], "invalid cwd"),
    (["--file", "-", "--id", "x"], "--id cannot be used with --file"),
    (['{"command":"x"}', "--file", "-"], "only one of"),
    (["--bogus-option", "echo"], "No such option"),
    (['{"command":"a"}', "b"], "JSON split into several words"),
])
def test_enqueue_refuses_bad_input_with_exit_2(cli, args, word):
    enqueue(cli, "--id", "existing", "true")
    assert word in refused(cli, "enqueue", *args, input="", code=2)


def test_enqueue_refuses_unreadable_files(cli, tmp_path):
    missing = str(tmp_path / "missing")
    for option in ("--file", "--job-file", "--command-file"):
        assert f"cannot read {option} {missing}" in refused(cli, "enqueue", option, missing, code=2)


def test_enqueue_refuses_a_duplicate_id_with_exit_1(cli):
    enqueue(cli, "--id", "dup", "first")
    assert "already exists" in refused(cli, "enqueue", "--id", "dup", "second", code=1)
    assert "already exists" in refused(cli, "enqueue", '{"id":"dup","command":"third"}', code=1)
    assert show(cli, "dup")["command"] == "first"


def test_a_long_command_is_refused(cli):
    assert "128 KiB" in refused(cli, "enqueue", "--cmd", "x" * (128 * 1024 + 1), code=2)
    enqueue(cli, "--id", "big", "--cmd", "x" * (128 * 1024))


# -- list ------------------------------------------------------------------------------------------

def test_list_pending_in_claim_order_and_others_newest_first(cli, home):
    enqueue(cli, "--id", "normal", "true")
    enqueue(cli, "--id", "delayed", "--priority", "-9", "--delay", "1h", "true")
    enqueue(cli, "--id", "urgent", "--priority", "-1", "true")
    enqueue(cli, "--id", "normal-2", "true")
    enqueue(cli, "--id", "lazy", "--priority", "3", "true")
    enqueue(cli, "--id", "d1", "--priority", "-5", "true")
    enqueue(cli, "--id", "d2", "--priority", "-5", "true")
    drive(home, {"d1": "completed", "d2": "completed"})
    assert listed(cli, "--state", "pending") == ["delayed", "urgent", "normal", "normal-2", "lazy"]
    assert listed(cli, "--state", "completed") == ["d2", "d1"]
    assert listed(cli) == ["d2", "d1", "lazy", "normal-2", "urgent", "delayed", "normal"]


def test_list_table(cli):
    enqueue(cli, "--id", "job1", "--priority", "2", "echo hello")
    result = cli("list")
    header, rule, row = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "TRIES", "PRI"]
    assert row.split()[:4] == ["job1", "pending", "0/4", "2"] and "echo hello" in row
    assert result.stderr == ""


def test_list_is_a_bounded_page_saying_how_many_more(cli):
    enqueue(cli, "--file", "-", input="".join(json.dumps({"id": f"j{n:02}", "command": "true"}) + "\n"
                                              for n in range(53)))
    result = cli("list")
    assert len(result.stdout.splitlines()) == 2 + 50
    assert result.stderr == "... 3 more; use --limit N (0 for all) to see them\n"
    result = cli("list", "--json")
    assert len(json.loads(result.stdout)) == 50 and "3 more" in result.stderr
    result = cli("list", "--state", "pending", "--limit", "5", "--json")
    assert [j["id"] for j in json.loads(result.stdout)] == ["j00", "j01", "j02", "j03", "j04"]
    assert "48 more" in result.stderr
    result = cli("list", "--limit", "0")
    assert len(result.stdout.splitlines()) == 2 + 53 and result.stderr == ""
    result = cli("list", "--state", "completed")
    assert result.stdout == "" and result.stderr == "No completed jobs.\n"


def test_list_of_an_empty_queue(cli):
    result = cli("list")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "No jobs.\n")
    assert cli.json("list") == []


@pytest.mark.parametrize("args", [("--state", "bogus"), ("--state", "done"), ("--limit", "-1"), ("--limit", "x")])
def test_list_refuses_bad_options(cli, args):
    assert "Invalid value" in refused(cli, "list", *args, code=2)


# -- show, logs, status --------------------------------------------------------------------------

def test_show_in_full_with_the_log_path(cli, home):
    enqueue(cli, "--id", "job1", "--max-retries", "2", "--timeout", "5", "echo hi")
    result = cli("show", "job1")
    detail, runs = result.stdout.split("\n\n")
    fields = dict(re.match(r"(\w+):\s+(.*)", line).groups() for line in detail.splitlines())
    assert list(fields) == JOB_FIELDS + ["log"]
    assert runs == "No runs yet.\n"
    assert fields["log"] == os.path.join(home, "logs", "job1.log")
    assert (fields["id"], fields["command"], fields["state"], fields["timeout"]) == ("job1", "echo hi", "pending", "5s")
    assert fields["attempts"].startswith("0")
    assert list(show(cli, "job1")) == JOB_FIELDS


def test_show_a_dead_job_with_its_last_error(cli, home):
    enqueue(cli, "--id", "bad", "false")
    drive(home, {"bad": "dead"})
    job = show(cli, "bad")
    assert (job["state"], job["attempts"], job["exit_code"], job["last_error"]) \
        == ("dead", 1, 1, "exit code 1: it broke")
    assert "exit code 1: it broke" in cli("show", "bad").stdout


def test_logs_print_the_log_file(cli, home):
    enqueue(cli, "--id", "job1", "true")
    result = cli("logs", "job1")
    assert (result.exit_code, result.stdout) == (0, "") and "No output yet" in result.stderr
    log_file(home, "job1", "=== run 1 ===\nhello\n")
    assert cli("logs", "jo").stdout == "=== run 1 ===\nhello\n"


def test_logs_follow_of_a_finished_job_prints_and_returns(cli, home):
    enqueue(cli, "--id", "job1", "true")
    drive(home, {"job1": "completed"})
    log_file(home, "job1", "all done\n")
    result = cli("logs", "--follow", "job")
    assert (result.exit_code, result.stdout) == (0, "all done\n")


def test_status_of_a_fresh_home_shows_five_zeros(cli):
    result = cli("status")
    assert result.exit_code == 0, result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines()[2:7])
    assert counts == dict.fromkeys(STATES, "0")
    assert "No live workers." in result.stdout
    assert cli.json("status") == {**dict.fromkeys(STATES, 0), "total": 0, "workers": [],
                                  "paused": {"all": False, "queues": [], "resumed": []}}


def test_status_counts_every_state(cli, home):
    enqueue(cli, "--file", "-", input="".join(json.dumps({"id": f"j{n}", "command": "true"}) + "\n"
                                              for n in range(9)))
    drive(home, {"j0": "processing", "j1": "completed", "j2": "completed", "j3": "failed", "j4": "dead",
                 "j5": "dead", "j6": "dead"})
    status = cli.json("status")
    assert {state: status[state] for state in STATES} == \
        {"pending": 2, "processing": 1, "completed": 2, "failed": 1, "dead": 3}
    assert status["total"] == 9


@pytest.mark.parametrize("args", [("list",), ("status",), ("dlq", "list"), ("config", "get"), ("show", "j"),
                                  ("worker", "status"), ("config", "get", "max_retries")])
def test_every_read_command_has_json_on_stdout(cli, args):
    enqueue(cli, "--id", "j", "true")
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)


# -- ids and prefixes ------------------------------------------------------------------------------

@pytest.fixture
def prefixed(cli, home):
    """Jobs whose ids share prefixes; `done-…` completed, `dead-…` dead."""
    for job_id in ("alpha-1", "alpha-2", "bravo", "done-x", "dead-x"):
        enqueue(cli, "--id", job_id, "true")
    drive(home, {"done-x": "completed", "dead-x": "dead"})
    return cli


@pytest.mark.parametrize("args, check", [
    (("show", "br", "--json"), lambda r: json.loads(r.stdout)["id"] == "bravo"),
    (("show", "alpha-2"), lambda r: "alpha-2" in r.stdout),
    (("logs", "br"), lambda r: r.exit_code == 0),
    (("wait", "don"), lambda r: r.exit_code == 0),
    (("wait", "dea", "--timeout", "5"), lambda r: r.exit_code == 1),
    (("wait", "br", "--timeout", "0.1"), lambda r: r.exit_code == 124),
    (("dlq", "retry", "dea"), lambda r: r.exit_code == 0),
    (("delete", "br"), lambda r: r.stdout == "Deleted 1 job\n"),
])
def test_a_unique_prefix_works_wherever_an_id_is_taken(prefixed, args, check):
    assert check(prefixed(*args))


@pytest.mark.parametrize("command", [("show",), ("logs",), ("wait",), ("delete",), ("dlq", "retry")])
@pytest.mark.parametrize("token, code, message", [
    ("alpha", 1, "Error: job id prefix 'alpha' is ambiguous: it matches alpha-1, alpha-2"),
    ("zulu", 1, "Error: no job with id or prefix 'zulu'"),
    ("../etc", 2, "Error: invalid job id '../etc'"),
])
def test_an_ambiguous_unknown_or_invalid_id_is_refused(prefixed, command, token, code, message):
    assert refused(prefixed, *command, token, code=code).startswith(message)


def test_an_id_given_twice_counts_once(prefixed):
    assert prefixed("delete", "bravo", "br", "bravo").stdout == "Deleted 1 job\n"
    assert prefixed("dlq", "retry", "dead-x", "dea").stdout == "Moved 1 job back to pending\n"
    assert prefixed("wait", "done-x", "don").exit_code == 0


# -- delete and purge ------------------------------------------------------------------------------

def test_delete_removes_jobs_and_their_logs(cli, home):
    for job_id in ("a", "b", "c"):
        enqueue(cli, "--id", job_id, "true")
    drive(home, {"b": "dead"})
    path = log_file(home, "b")
    result = cli("delete", "a", "b")
    assert (result.exit_code, result.stdout) == (0, "Deleted 2 jobs\n")
    assert listed(cli) == ["c"] and not os.path.exists(path)


def test_delete_is_all_or_none(cli, home):
    for job_id in ("a", "b", "busy"):
        enqueue(cli, "--id", job_id, "true")
    drive(home, {"busy": "processing"})
    path = log_file(home, "a")
    assert "busy is processing" in refused(cli, "delete", "a", "busy", code=1)
    assert "no job with id or prefix 'nope'" in refused(cli, "delete", "a", "nope", code=1)
    assert os.path.exists(path)
    assert refused(cli, "delete", code=2).startswith("Error: Missing argument")


@pytest.fixture
def finished(cli, home):
    """old-ok and old-dead finished ten days ago; new-ok and new-dead just now; one pending."""
    for job_id in ("old-ok", "new-ok", "old-dead", "new-dead", "waiting"):
        enqueue(cli, "--id", job_id, "true")
    drive(home, {"old-ok": "completed", "old-dead": "dead"}, at=time.time() - 10 * 86400)
    drive(home, {"new-ok": "completed", "new-dead": "dead"})
    return cli


def test_purge_older_than(finished, home):
    path = log_file(home, "old-ok")
    result = finished("purge", "--state", "completed", "--older-than", "7d", "--yes")
    assert (result.exit_code, result.stdout) == (0, "Purged 1 completed job\n")
    assert sorted(listed(finished)) == ["new-dead", "new-ok", "old-dead", "waiting"]
    assert not os.path.exists(path)
    assert finished("purge", "--state", "dead", "-y").stdout == "Purged 2 dead jobs\n"
    assert sorted(listed(finished)) == ["new-ok", "waiting"]


@pytest.mark.parametrize("args, word", [
    (("--state", "pending", "--yes"), "Invalid value for '--state'"),
    (("--state", "failed", "--yes"), "Invalid value for '--state'"),
    (("--yes",), "Missing option '--state'"),
    (("--state", "completed", "--older-than", "a week", "--yes"), "invalid --older-than"),
])
def test_purge_refuses_bad_options(finished, args, word):
    assert word in refused(finished, "purge", *args, code=2)


def _confirmation(home, *args, answer):
    """A destructive command run as from a script (real stdin), answering `answer`."""
    result = run_cli(home, *args, input=answer)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    return result, lines


@pytest.mark.parametrize("args", [("purge", "--state", "completed"), ("dlq", "purge")])
@pytest.mark.parametrize("answer", ["", "n\n", "no\n"])
def test_destructive_commands_ask_and_refuse_without_a_yes(finished, home, args, answer):
    before = snapshot(finished)
    result, lines = _confirmation(home, *args, answer=answer)
    assert result.returncode == 1 and result.stdout == ""
    assert lines[-1] == "Error: not confirmed; nothing was deleted (pass --yes to skip the question)"
    assert [line for line in lines if "Error" in line] == lines[-1:]
    assert snapshot(finished) == before


@pytest.mark.parametrize("args, left", [(("purge", "--state", "completed"), 3), (("dlq", "purge"), 3)])
def test_destructive_commands_go_ahead_on_yes(finished, home, args, left):
    result, _ = _confirmation(home, *args, answer="y\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Purged 2 ")
    assert finished.json("status")["total"] == left


# -- the dead letter queue -------------------------------------------------------------------------

@pytest.fixture
def dlq(cli, home):
    for job_id in ("d1", "d2", "ok", "p"):
        enqueue(cli, "--id", job_id, "--max-retries", "0", f"exit 1 # {job_id}")
    drive(home, {"d1": "dead", "d2": "dead", "ok": "completed"})
    return cli


def test_dlq_list(dlq):
    jobs = dlq.json("dlq", "list")
    assert [j["id"] for j in jobs] == ["d2", "d1"]
    assert [(j["state"], j["attempts"], j["last_error"]) for j in jobs] == [("dead", 1, "exit code 1: it broke")] * 2
    result = dlq("dlq", "list")
    header, _, *rows = result.stdout.splitlines()
    assert "ATTEMPTS" in header and "LAST ERROR" in header
    assert [row.split()[:2] for row in rows] == [["d2", "1"], ["d1", "1"]]
    assert all("exit code 1: it broke" in row for row in rows)


def test_dlq_list_empty(cli):
    result = cli("dlq", "list")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "The dead letter queue is empty.\n")


def test_dlq_retry_gives_a_fresh_start(dlq):
    result = dlq("dlq", "retry", "d1")
    assert (result.exit_code, result.stdout) == (0, "Moved 1 job back to pending\n")
    job = show(dlq, "d1")
    assert (job["state"], job["attempts"]) == ("pending", 0)
    assert abs(parse_iso(job["run_at"]) - time.time()) < 60
    assert [j["id"] for j in dlq.json("dlq", "list")] == ["d2"]


def test_dlq_retry_all(dlq):
    assert dlq("dlq", "retry", "--all").stdout == "Moved 2 jobs back to pending\n"
    assert dlq.json("status")["dead"] == 0 and dlq.json("status")["pending"] == 3
    assert dlq("dlq", "retry", "--all").stdout == "Moved 0 jobs back to pending\n"


@pytest.mark.parametrize("args, code, word", [
    ((), 2, "give job ids or --all"),
    (("d1", "--all"), 2, "give job ids or --all"),
    (("d1", "p"), 1, "job p is pending, not dead"),
    (("d1", "ok"), 1, "job ok is completed, not dead"),
    (("d1", "nope"), 1, "no job with id or prefix 'nope'"),
])
def test_dlq_retry_refusals_are_all_or_none(dlq, args, code, word):
    assert word in refused(dlq, "dlq", "retry", *args, code=code)


def test_dlq_purge(dlq, home):
    path = log_file(home, "d1")
    assert dlq("dlq", "purge", "--yes").stdout == "Purged 2 dead jobs\n"
    assert sorted(listed(dlq)) == ["ok", "p"] and not os.path.exists(path)


# -- config ----------------------------------------------------------------------------------------

def test_config_get_all(cli):
    assert cli.json("config", "get") == config.DEFAULTS
    result = cli("config", "get")
    header, _, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["KEY", "VALUE"]
    assert [row.split()[:2] for row in rows] == [[k, repr(v)] for k, v in config.DEFAULTS.items()]


@pytest.mark.parametrize("key, printed", [
    ("max_retries", "3"), ("max-retries", "3"), ("default_max_retries", "3"), ("max_retries_default", "3"),
    ("backoff_base", "2"), ("backoff_max", "3600"), ("timeout_seconds", "0"), ("timeout", "0"),
    ("job-timeout", "0"), ("poll_interval", "1.0"), ("lease_seconds", "30"),
])
def test_config_get_prints_the_bare_value(cli, key, printed):
    result = cli("config", "get", key)
    assert (result.exit_code, result.stdout, result.stderr) == (0, printed + "\n", "")


@pytest.mark.parametrize("key, value, name, stored", [
    ("max_retries", "5", "max_retries", 5),
    ("max-retries", "0", "max_retries", 0),
    ("default_max_retries", "9", "max_retries", 9),
    ("backoff_base", "1.5", "backoff_base", 1.5),
    ("backoff-max", "60", "backoff_max", 60),
    ("timeout", "30", "timeout_seconds", 30),
    ("job_timeout", "2.5", "timeout_seconds", 2.5),
    ("poll-interval", "0.2", "poll_interval", 0.2),
    ("lease_seconds", "10", "lease_seconds", 10),
])
def test_config_set_with_names_and_aliases(cli, key, value, name, stored):
    result = cli("config", "set", key, value)
    assert (result.exit_code, result.stdout) == (0, f"{name} = {stored!r}\n")
    assert cli.json("config", "get") == {**config.DEFAULTS, name: stored}
    assert cli("config", "get", key).stdout == f"{stored!r}\n"


@pytest.mark.parametrize("args, word", [
    (("set", "bogus", "1"), "unknown config key 'bogus'; valid keys: max_retries"),
    (("set", "max_retries", "-1"), "max_retries must be a whole number from 0"),
    (("set", "max_retries", "1.5"), "max_retries must be a whole number"),
    (("set", "max_retries", "many"), "max_retries must be a whole number"),
    (("set", "backoff_base", "0.5"), "backoff_base must be a number from 1"),
    (("set", "backoff_base", "nan"), "backoff_base must be a number"),
    (("set", "lease_seconds", "0"), "lease_seconds must be a number from 1"),
    (("set", "timeout", "-5"), "timeout_seconds must be a number from 0"),
    (("set", "max_retries"), "Missing argument"),
    (("get", "bogus"), "unknown config key 'bogus'"),
    (("reset", "bogus"), "unknown config key 'bogus'"),
])
def test_config_refusals(cli, args, word):
    cli("config", "set", "max_retries", "4")
    assert word in refused(cli, "config", *args, code=2)


def test_config_reset_one_key_or_all(cli):
    cli("config", "set", "max_retries", "5")
    cli("config", "set", "timeout", "30")
    result = cli("config", "reset", "default-max-retries")
    assert (result.exit_code, result.stdout) == (0, "Reset max_retries to the default\n")
    assert cli.json("config", "get") == {**config.DEFAULTS, "timeout_seconds": 30}
    assert cli("config", "reset").exit_code == 0
    assert cli.json("config", "get") == config.DEFAULTS


# -- usage ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("bogus",), ("dlq", "bogus"), ("worker", "bogus"), ("status", "extra"),
                                  ("--bogus", "status"), ("list", "--bogus"), ()])
def test_usage_errors_exit_2_with_one_line(cli, args):
    assert refused(cli, *args, code=2).startswith("Error: ")


@pytest.mark.parametrize("args", [(), ("dlq",), ("config",), ("worker",)])
@pytest.mark.sqlite_only
def test_a_group_alone_shows_its_help(home, args):
    argv = ["--home", home, *args] if args else []  # `queuectl --home DIR` alone: "Missing command"
    result = CliRunner().invoke(cli_group, argv, prog_name="queuectl")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(" ".join(["Usage: queuectl", *args, "[OPTIONS] COMMAND"]))
    assert "Commands:" in result.stderr and "Error" not in result.stderr


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and re.match(r"queuectl, version \d", result.stdout)
