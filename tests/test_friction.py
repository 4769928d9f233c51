"""What a pueue or task-spooler user hits first (issue 10): several words as one command,
`--lines` batches, `logs -f`/`wait` exit codes and their notice when no worker is running,
`logs --tail`, `wait --all`, progress bars on a terminal, compound durations, plurals, hints.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli, wait_until
from queuectl import timeutil, watch
from queuectl.errors import BadInput
from queuectl.home import QueueHome
from queuectl.store.sqlite import SqliteStore as Store

ROOT = Path(__file__).resolve().parent.parent
WORKER = "test-worker"


# -- helpers -------------------------------------------------------------------------------------

def ok(cli, *args, input=None):
    result = cli(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return result


def refused(cli, *args, code=2, input=None) -> str:
    """The single `Error:` line of a refused command, which must change nothing."""
    before = cli.json("list", "--limit", "0")
    result = cli(*args, input=input)
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert cli.json("list", "--limit", "0") == before
    return lines[0]


def commands(cli) -> list:
    """Every job's command, in enqueue order."""
    return [job["command"] for job in reversed(cli.json("list", "--limit", "0"))]


def drive(home, outcomes: dict) -> None:
    """Move due jobs as a worker would: {id: "processing" | "completed" | "dead"}; the rest stay."""
    store = Store.open(QueueHome(home).db_path, durable=False)
    try:
        others, left = [], dict(outcomes)
        while left:
            job = store.claim_next(WORKER, time.time())
            assert job is not None, f"not due: {sorted(left)}"
            outcome = left.pop(job.id, None)
            if outcome is None:
                others.append(job)
            elif outcome == "completed":
                assert store.mark_completed(job, WORKER, time.time())
            elif outcome == "dead":
                assert store.mark_dead(job, WORKER, 3, "exit code 3", time.time())
        for job in others:
            assert store.release(job, WORKER, time.time())
    finally:
        store.close()


def run_on_terminal(home: str, *args: str, timeout: float = 60):
    """The CLI with its stderr on a pseudo-terminal (where progress bars show); (result, stderr)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "queuectl", "--home", home, *args],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list = []

    def drain() -> None:  # read as it comes: a full terminal buffer would block the CLI
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer has gone
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(timeout=timeout)
        reader.join(timeout)
    finally:
        os.close(master)
    return process.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


# -- enqueue: several words are one command --------------------------------------------------------

@pytest.mark.parametrize("words, command", [
    (["echo", "hello", "world"], "echo hello world"),
    (["--", "ls", "-la"], "ls -la"),                      # a command's options after --
    (["echo", "hi", "--priority", "3"], "echo hi"),        # options may still follow the words
    (["--", "{", "echo", "a;", "}"], "{ echo a; }"),      # `{` alone opens a shell group, not JSON
    (["--", "[", "-f", "x", "]", "&&", "make"], "[ -f x ] && make"),
    (["echo {}"], "echo {}"),                              # one quoted word, as before
])
def test_several_words_are_one_command_joined_with_spaces(cli, words, command):
    job_id = ok(cli, "enqueue", "-q", *words).stdout.strip()
    assert cli.json("show", job_id)["command"] == command


def test_options_mixed_with_words_still_apply(cli):
    job_id = ok(cli, "enqueue", "-q", "echo", "hi", "--priority", "3").stdout.strip()
    assert cli.json("show", job_id)["priority"] == 3


def test_a_single_json_argument_stays_json(cli):
    ok(cli, "enqueue", '{"id":"j1","command":"echo one two"}')
    assert cli.json("show", "j1")["command"] == "echo one two"


@pytest.mark.parametrize("words", [
    ['{"command":"make"}', "extra"],       # JSON followed by a stray word
    ["{command:", "make}"],                # JSON the shell split at a space (unquoted)
])
def test_json_split_into_several_words_is_refused(cli, words):
    assert "JSON split into several words" in refused(cli, "enqueue", *words)


def test_a_command_with_options_before_double_dash_gets_a_hint(cli):
    line = refused(cli, "enqueue", "ls", "-la")
    assert "No such option" in line and "queuectl enqueue -- ls -la" in line


def test_the_command_given_as_words_and_cmd_is_refused(cli):
    assert "the command is given twice" in refused(cli, "enqueue", "echo", "a", "--cmd", "ls")


def test_command_file_dash_reads_standard_input(cli):
    ok(cli, "enqueue", "--id", "s", "--command-file", "-", input="for f in *; do echo $f; done\n")
    assert cli.json("show", "s")["command"] == "for f in *; do echo $f; done"


# -- enqueue --lines -------------------------------------------------------------------------------

LINES = "echo one\n\n# a comment\n   # an indented comment\n  echo 'two words'  \r\nls -la | wc -l\n"


@pytest.mark.parametrize("from_stdin", [True, False], ids=["stdin", "path"])
def test_lines_enqueues_one_command_per_line(cli, tmp_path, from_stdin):
    if from_stdin:
        result = ok(cli, "enqueue", "--lines", "-", input=LINES)
    else:
        path = tmp_path / "commands.txt"
        path.write_text(LINES)
        result = ok(cli, "enqueue", "--lines", str(path))
    assert result.stdout == "Enqueued 3 jobs\n"
    assert commands(cli) == ["echo one", "echo 'two words'", "ls -la | wc -l"]


def test_lines_flags_apply_to_every_job_and_quiet_prints_the_ids(cli):
    result = ok(cli, "enqueue", "--lines", "-", "--priority", "4", "--max-retries", "0", "-q", input=LINES)
    ids = result.stdout.split()
    assert len(ids) == 3
    assert {(job["priority"], job["max_retries"]) for job in cli.json("list")} == {(4, 0)}


def test_lines_one_job_says_job(cli):
    assert ok(cli, "enqueue", "--lines", "-", input="true\n").stdout == "Enqueued 1 job\n"
    assert ok(cli, "enqueue", "--lines", "-", input="# nothing\n\n").stdout == "Enqueued 0 jobs\n"


def test_lines_is_all_or_none_and_names_the_bad_line(cli):
    ok(cli, "enqueue", "--id", "before", "true")
    line = refused(cli, "enqueue", "--lines", "-", input="echo a\n\necho b\x00c\necho d\n")
    assert "standard input line 3" in line and "NUL" in line
    assert commands(cli) == ["true"]


@pytest.mark.parametrize("args, word", [
    (["--lines", "-", "--id", "x"], "--id cannot be used with --lines"),
    (["--lines", "-", "--cmd", "ls"], "cannot be used with --cmd"),
    (["--lines", "-", "--file", "jobs.jsonl"], "only one of"),
    (["--lines", "-", "echo", "a"], "only one of"),
    (["--file", "-", "--command-file", "-"], "only one option can read standard input"),
])
def test_lines_refuses_what_it_cannot_combine_with(cli, args, word):
    assert word in refused(cli, "enqueue", *args, input="echo a\n")


# -- durations -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("1h30m", 5400),
    ("1h 30m", 5400),        # blanks between the parts
    ("1d12h", 129600),
    ("2m30s", 150),
    ("1w", 604800),
    ("2w3d", 17 * 86400),
    ("1H30M", 5400),         # units are case-insensitive
    ("1.5h", 5400),
    ("1h0.5m", 3630),
])
def test_compound_durations_and_weeks(text, seconds):
    assert timeutil.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "1h30", "30 1h", "h30m", "1h-30m", "1w1y"])
def test_durations_refused(text):
    with pytest.raises(BadInput, match=r"invalid delay .*1h30m"):
        timeutil.parse_duration(text, "delay")


def test_enqueue_delay_takes_a_compound_duration(cli):
    job = json.loads(ok(cli, "enqueue", "--json", "--delay", "1h30m", "true").stdout)
    delay = timeutil.parse_iso(job["run_at"]) - timeutil.parse_iso(job["created_at"])
    assert delay == pytest.approx(5400, abs=1)


@pytest.mark.parametrize("key, text, stored", [
    ("backoff_max", "1h", 3600),
    ("backoff-max", "1h30m", 5400),
    ("timeout", "2.5m", 150),
    ("lease_seconds", "90s", 90),
    ("poll_interval", "0.5s", 0.5),
    ("backoff_max", "120", 120),       # plain seconds, as before
])
def test_config_keys_in_seconds_take_durations(cli, key, text, stored):
    ok(cli, "config", "set", key, text)
    value = cli.json("config", "get")[key.replace("-", "_") if key != "timeout" else "timeout_seconds"]
    assert (type(value), value) == (type(stored), stored)


@pytest.mark.parametrize("key, text, word", [
    ("lease_seconds", "2d", "invalid value '2d': lease_seconds must be a number from 1 to 86400 seconds"),
    ("backoff_max", "1x", "or a duration such as"),
    ("max_retries", "1h", "max_retries must be a whole number"),  # not a setting in seconds
    ("backoff_base", "1m", "backoff_base must be a number"),
])
def test_config_refuses_bad_durations(cli, key, text, word):
    before = cli.json("config", "get")
    result = cli("config", "set", key, text)
    assert result.exit_code == 2 and word in result.stderr
    assert cli.json("config", "get") == before


# -- plurals, prompts and hints --------------------------------------------------------------------

def test_purge_asks_how_many_it_will_delete(cli, home):
    for job_id in ("a", "b", "c"):
        ok(cli, "enqueue", "--id", job_id, "true")
    drive(home, {"a": "completed", "b": "completed", "c": "dead"})
    result = run_cli(home, "purge", "--state", "completed", input="n\n")
    assert result.returncode == 1 and "Delete 2 completed jobs? [y/N]" in result.stderr
    result = run_cli(home, "dlq", "purge", input="y\n")
    assert result.returncode == 0 and "Delete 1 dead job? [y/N]" in result.stderr
    assert result.stdout == "Purged 1 dead job\n"


def test_purge_with_nothing_to_delete_asks_nothing(cli, home):
    result = run_cli(home, "purge", "--state", "completed", input="")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Purged 0 completed jobs\n", "")


@pytest.mark.parametrize("args, command", [
    (["status", "--home", "x"], "status"),
    (["worker", "start", "--home=x"], "worker start"),
])
def test_home_after_the_command_says_it_goes_before(cli, args, command):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr == f"Error: --home goes before the command: queuectl --home DIR {command} ...\n"


def test_a_corrupt_config_names_config_reset(cli, home):
    ok(cli, "status")
    Path(QueueHome(home).config_path).write_text("{not json")
    result = cli("status")
    assert result.exit_code == 1 and "run `queuectl config reset`" in result.stderr
    ok(cli, "config", "reset")
    ok(cli, "status")


def test_status_says_processing_jobs_without_a_worker_are_taken_back(cli, home):
    ok(cli, "enqueue", "--id", "orphan", "sleep 100")
    drive(home, {"orphan": "processing"})
    out = ok(cli, "status").stdout
    assert "No live workers.\n1 processing job will be taken back when a pool starts" in out


# -- logs --tail -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, lines, expected", [
    ("a\nb\nc\n", 2, "b\nc\n"),
    ("a\nb\nc", 2, "b\nc"),                    # no final newline
    ("a\nb\nc\n", 0, ""),
    ("a\nb\nc\n", 3, "a\nb\nc\n"),
    ("a\nb\nc\n", 10, "a\nb\nc\n"),            # more lines than the file has
    ("", 5, ""),
    ("\n\n\n", 2, "\n\n"),                     # empty lines count
    ("x" * 100_000 + "\n" + "y\n" * 3, 4, "x" * 100_000 + "\n" + "y\n" * 3),  # across blocks
    ("line\n" * 50_000, 20_000, "line\n" * 20_000),
])
def test_seek_tail(tmp_path, text, lines, expected):
    path = tmp_path / "log"
    path.write_text(text)
    with open(path, "rb") as handle:
        watch._seek_tail(handle, lines)
        assert handle.read().decode() == expected


def test_logs_tail_prints_the_last_lines(cli, home):
    ok(cli, "enqueue", "--id", "t", "true")
    Path(QueueHome(home).log_path("t")).write_text("".join(f"line {n}\n" for n in range(1, 101)))
    assert ok(cli, "logs", "t", "--tail", "3").stdout == "line 98\nline 99\nline 100\n"
    assert ok(cli, "logs", "t", "-n", "1").stdout == "line 100\n"
    assert cli("logs", "t", "--tail", "-1").exit_code == 2


# -- logs -f and wait: exit codes, --all, the notice --------------------------------------------

@pytest.mark.parametrize("outcome, code", [("completed", 0), ("dead", 1)])
def test_logs_follow_exits_as_wait_does(cli, home, outcome, code):
    ok(cli, "enqueue", "--id", "f", "true")
    drive(home, {"f": outcome})
    result = cli("logs", "f", "--follow")
    assert result.exit_code == code
    assert result.stderr == ("" if code == 0 else "Not completed: f (dead)\n")


def test_logs_timeout_needs_follow(cli):
    ok(cli, "enqueue", "--id", "f", "true")
    assert "--timeout applies to --follow only" in refused(cli, "logs", "f", "--timeout", "5")


def test_wait_all_or_ids_not_both(cli):
    ok(cli, "enqueue", "--id", "w", "true")
    assert "give job ids or --all" in refused(cli, "wait", "--all", "w")
    assert "give job ids or --all" in refused(cli, "wait")


def test_wait_all_with_nothing_unfinished_returns_at_once(cli, home):
    ok(cli, "enqueue", "--id", "done", "true")
    drive(home, {"done": "completed"})
    result = cli("wait", "--all", "--timeout", "5")
    assert (result.exit_code, result.stderr) == (0, "")


@pytest.mark.timeout(60)
def test_no_live_worker_is_said_once(cli, home):
    ok(cli, "enqueue", "--id", "lonely", "true")
    started = time.monotonic()
    result = run_cli(home, "wait", "lonely", "--timeout", "6")
    assert result.returncode == 124 and time.monotonic() - started >= 6
    notices = [line for line in result.stderr.splitlines() if line.startswith("No live worker")]
    assert notices == ["No live worker: 1 job will wait until a pool starts (queuectl worker start)"]
    result = run_cli(home, "logs", "lonely", "-f", "--timeout", "5")
    assert result.returncode == 124
    assert result.stderr.count("No live worker") == 1 and "Timed out following job lonely" in result.stderr


@pytest.mark.timeout(120)
def test_with_a_live_pool_logs_follow_and_wait_all_exit_by_outcome(cli, home, workdir, pools):
    ok(cli, "enqueue", "--id", "good", "--cwd", workdir, "sleep 4; echo fine")
    ok(cli, "enqueue", "--id", "bad", "--cwd", workdir, "--max-retries", "0", "sleep 4; echo broken; exit 3")
    pools.start(2)
    follow = run_cli(home, "logs", "bad", "--follow")
    assert follow.returncode == 1, follow.stderr
    assert "broken" in follow.stdout and follow.stderr.endswith("Not completed: bad (dead)\n")
    waited = run_cli(home, "wait", "--all", "--timeout", "60")  # only `good` can be left: it completes
    assert waited.returncode == 0, waited.stderr
    assert "No live worker" not in follow.stderr + waited.stderr  # a pool was there all along
    assert run_cli(home, "wait", "good", "bad").returncode == 1
    assert run_cli(home, "wait", "good").returncode == 0


@pytest.mark.timeout(120)
def test_wait_all_waits_for_every_unfinished_job(cli, home, workdir, pools):
    ok(cli, "enqueue", "--id", "first", "--cwd", workdir, "sleep 3; echo 1 >> order")
    ok(cli, "enqueue", "--id", "second", "--cwd", workdir, "--max-retries", "0", "sleep 1; exit 3")
    pools.start(1)
    wait_until(lambda: cli.json("show", "first")["state"] == "processing", 30, what="first to start")
    result = run_cli(home, "wait", "--all", "--timeout", "60")
    assert (result.returncode, result.stderr) == (1, "Not completed: second (dead)\n")
    states = {job["id"]: job["state"] for job in cli.json("list")}
    assert states == {"first": "completed", "second": "dead"}


# -- progress bars on a terminal -------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_progress_bars_show_on_a_terminal_only(home, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"command": f"echo {n}"}) + "\n" for n in range(20_000)))
    code, out, err = run_on_terminal(home, "enqueue", "--file", str(jobs))
    assert (code, out) == (0, "Enqueued 20000 jobs\n")
    assert "20000 of 20000 enqueued" in err
    plain = run_cli(home, "enqueue", "--file", str(jobs))
    assert (plain.returncode, plain.stderr) == (0, "")


@pytest.mark.timeout(120)
def test_wait_and_purge_show_progress_on_a_terminal(cli, home):
    ok(cli, "enqueue", "--file", "-", input="".join(f'{{"command": "echo {n}"}}\n' for n in range(1200)))
    ids = [job["id"] for job in cli.json("list", "--limit", "0")]
    drive(home, {job_id: "completed" for job_id in ids})
    for job_id in ids:
        Path(QueueHome(home).log_path(job_id)).write_text("output\n")
    code, _, err = run_on_terminal(home, "wait", *ids[:10])
    assert code == 0 and "10 of 10 finished" in err
    code, out, err = run_on_terminal(home, "purge", "--state", "completed", "--yes")
    assert (code, out) == (0, "Purged 1200 completed jobs\n")
    assert "1200 of 1200 logs removed" in err
    assert os.listdir(QueueHome(home).logs_dir) == []


# -- the demo and the README's recipes -------------------------------------------------------------

def test_the_demo_prints_commands_that_paste_back_exactly(tmp_path):
    """Each `$ queuectl ...` line the demo prints, split as a shell would, is what it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "queuectl"  # records its arguments; the demo's jobs need no real queue here
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['ARGV_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    "open('ran.txt', 'a').close()\n")
    fake.chmod(0o755)
    log = tmp_path / "argv.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "ARGV_LOG": str(log)}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = [line[2:] for line in result.stdout.splitlines() if line.startswith("$ queuectl")]
    ran = [["queuectl", *json.loads(line)] for line in log.read_text().splitlines()[:len(printed)]]
    assert [shlex.split(line) for line in printed] == ran and len(ran) >= 9
    assert "queuectl enqueue --id flaky --max-retries 2 \"echo 'disk full' >&2; exit 3\"" in printed
    for line in printed:
        assert subprocess.run(["sh", "-n", "-c", line]).returncode == 0, line


@pytest.mark.parametrize("shell, mark", [
    ("bash", "complete -o nosort -F _queuectl_completion queuectl"),
    ("zsh", "#compdef queuectl"),
    ("fish", "complete --no-files --command queuectl"),
])
def test_shell_completion_as_the_readme_shows_it(shell, mark):
    queuectl = os.path.join(os.path.dirname(sys.executable), "queuectl")
    source = subprocess.run([queuectl], env={**os.environ, "_QUEUECTL_COMPLETE": f"{shell}_source"},
                            capture_output=True, text=True, timeout=30)
    assert source.returncode == 0 and mark in source.stdout, source.stdout[:500]
    assert f"_QUEUECTL_COMPLETE={shell}_source queuectl" in (ROOT / "README.md").read_text()


def test_bash_completion_completes_a_command():
    queuectl = os.path.join(os.path.dirname(sys.executable), "queuectl")
    words = subprocess.run([queuectl], env={**os.environ, "_QUEUECTL_COMPLETE": "bash_complete",
                                            "COMP_WORDS": "queuectl enq", "COMP_CWORD": "1"},
                           capture_output=True, text=True, timeout=30)
    assert words.stdout.strip() == "plain,enqueue"
