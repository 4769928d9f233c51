"""Hostile input through the real CLI (a subprocess, as a user or script runs it).

Every refusal: the exit code SPEC gives (2 bad input or usage, 1 an operation that cannot be
done), exactly one line on stderr starting `Error:`, no traceback, nothing on stdout, and the
queue exactly as it was. Also: a home that cannot be created, a corrupt config.json, a queue.db
that is not SQLite, and the private modes of the home and its files.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat

import pytest

from conftest import Cli, Pools, run_cli, wait_until

# -- a populated queue home, built once and copied for every case -------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A queue home with a completed, a dead, two pending and a delayed job, and a config.json."""
    root = tmp_path_factory.mktemp("pristine")
    home, workdir = str(root / "qhome"), str(root / "work")
    os.mkdir(workdir)

    def ok(*args: str) -> None:
        result = run_cli(home, *args, cwd=workdir)
        assert result.returncode == 0, (args, result.stderr)

    ok("config", "set", "backoff_max", "100")
    ok("enqueue", "--id", "done", "echo done")
    ok("enqueue", "--id", "doomed", "--max-retries", "0", "echo doomed; exit 3")
    ok("worker", "start", "--burst")
    ok("enqueue", "--id", "keep1", "echo keep1")
    ok("enqueue", "--id", "keep2", "--priority", "5", "echo keep2")
    ok("enqueue", "--id", "later", "--delay", "1h", "echo later")
    ok("enqueue", "--id", "waiter", "--after", "keep2", "--queue", "steer", "echo waiter")
    ok("queue", "limit", "steer", "2")
    ok("pause", "held")
    return home


@pytest.fixture
def qhome(pristine, tmp_path):
    home = str(tmp_path / "qhome")
    shutil.copytree(pristine, home)
    return home


def files_of(home: str) -> dict:
    """Every file but the database (compared through the CLI): path -> (mode, content hash)."""
    found = {}
    for folder, _, names in os.walk(home):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith("queue.db"):
                continue
            with open(path, "rb") as handle:
                found[os.path.relpath(path, home)] = (os.stat(path).st_mode, hashlib.sha256(handle.read()).hexdigest())
    return found


def snapshot(home: str) -> tuple:
    cli = Cli(home)  # in-process: cheap, and the command under test is the real one
    return cli.json("list", "--limit", "0"), cli.json("status"), cli.json("queues"), files_of(home)


def assert_one_error_line(result, code: int) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


# -- the corpus ----------------------------------------------------------------------------------

BIG = 10 ** 30
LONG_ID = "x" * 10_000
DEEP = "[" * 100_000  # deeper than any recursion limit

# Files a case can name as @name (written into the case's temporary folder).
FILES = {
    "bad-line.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new2", "command": \n',
    "not-object.jsonl": '{"id": "new1", "command": "true"}\n[1, 2]\n',
    "strings.json": '["true", "false"]',
    "wrong-type.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new2", "command": 42}\n',
    "state.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new2", "command": "true", "state": "completed"}\n',
    "repeat.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new1", "command": "false"}\n',
    "taken.jsonl": '{"id": "new1", "command": "true"}\n{"id": "keep1", "command": "true"}\n',
    "bad-id.jsonl": '{"id": "new1", "command": "true"}\n{"id": "../x", "command": "true"}\n',
    "good.jsonl": '{"id": "new1", "command": "true"}\n',
    "job-wrong-type.json": '{"command": 42}',
    "job-array.json": '[{"command": "true"}]',
    "job-unknown.json": '{"command": "true", "owner": "me"}',
    "deep.json": DEEP,
    "deep-line.jsonl": '{"id": "new1", "command": "true"}\n' + DEEP + "\n",
    "huge-command.txt": "echo " + "x" * 200_000,
    "latin1.txt": b"echo caf\xe9",
    "empty-command.txt": "\n",
    "cycle.jsonl": '{"id": "new1", "command": "true", "after": ["new2"]}\n'
                   '{"id": "new2", "command": "true", "after": ["new1"]}\n',
    "self.jsonl": '{"id": "new1", "command": "true", "after": ["new1"]}\n',
    "unknown-after.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new2", "command": "true", "after": ["nope"]}\n',
    "bad-queue.jsonl": '{"id": "new1", "command": "true"}\n{"id": "new2", "command": "true", "queue": "a/b"}\n',
}


def case(*args, code: int = 2, stdin: str | None = None, id: str):
    return pytest.param(args, code, stdin, id=id)



CASES = [
    # Malformed JSON and JSON that is not an object.
    case("enqueue", "{", id="json-open-brace"),
    case("enqueue", '{"id": "new1", "command": "true"', id="json-truncated"),
    case("enqueue", '{"command": "true"} trailing', id="json-trailing-garbage"),
    case("enqueue", '{"command": "true"} {"command": "false"}', id="json-two-objects"),
    case("enqueue", "{'command': 'true'}", id="json-single-quotes"),
    case("enqueue", '{"command": "true",}', id="json-trailing-comma"),
    case("enqueue", "[1, 2]", id="json-array"),
    case("enqueue", '["true"]', id="json-array-of-strings"),
    case("enqueue", '"true"', id="json-string"),
    case("enqueue", "42", id="json-number"),
    case("enqueue", "{}", id="json-empty-object"),
    case("enqueue", '{"command": NaN}', id="json-nan"),
    case("enqueue", '{"command": "true", "priority": Infinity}', id="json-infinity"),
    case("enqueue", DEEP, id="json-deeply-nested-array"),
    case("enqueue", '{"command": ' + DEEP, id="json-deeply-nested-value"),
    case("enqueue", "--file", "@bad-line.jsonl", id="file-malformed-line"),
    case("enqueue", "--file", "@not-object.jsonl", id="file-non-object-line"),
    case("enqueue", "--file", "@strings.json", id="file-array-of-strings"),
    case("enqueue", "--file", "-", stdin="not json\n", id="file-stdin-garbage"),
    case("enqueue", "--file", "@deep.json", id="file-deeply-nested"),
    case("enqueue", "--file", "@deep-line.jsonl", id="file-deeply-nested-line"),
    case("enqueue", "--file", "@missing.jsonl", id="file-missing"),
    case("enqueue", "--file", "@", id="file-is-a-directory"),
    case("enqueue", "--job-file", "@job-array.json", id="job-file-array"),
    case("enqueue", "--job-file", "@deep.json", id="job-file-deeply-nested"),
    case("enqueue", "--job-file", "@missing.json", id="job-file-missing"),
    case("enqueue", "--command-file", "@missing.txt", id="command-file-missing"),
    case("enqueue", "--command-file", "@latin1.txt", id="command-file-not-utf8"),
    case("enqueue", "--command-file", "@empty-command.txt", id="command-file-empty"),
    case("enqueue", "--command-file", "@huge-command.txt", id="command-over-128k"),
    # Wrong types.
    case("enqueue", '{"command": "true", "max_retries": "abc"}', id="max-retries-string"),
    case("enqueue", '{"command": "true", "max_retries": "3"}', id="max-retries-numeric-string"),
    case("enqueue", '{"command": "true", "max_retries": true}', id="max-retries-bool"),
    case("enqueue", '{"command": "true", "max_retries": 1.5}', id="max-retries-fraction"),
    case("enqueue", '{"command": 42}', id="command-number"),
    case("enqueue", '{"command": ["echo", "hi"]}', id="command-array"),
    case("enqueue", '{"command": {"sh": "true"}}', id="command-object"),
    case("enqueue", '{"command": true}', id="command-bool"),
    case("enqueue", '{"command": ""}', id="command-empty"),
    case("enqueue", '{"command": "   "}', id="command-blank"),
    case("enqueue", '{"command": null}', id="command-null"),
    case("enqueue", '{"command": "echo \\u0000 hi"}', id="command-nul"),
    case("enqueue", '{"command": "true", "priority": "high"}', id="priority-string"),
    case("enqueue", '{"command": "true", "priority": 0.5}', id="priority-fraction"),
    case("enqueue", '{"command": "true", "timeout": "abc"}', id="timeout-string"),
    case("enqueue", '{"command": "true", "timeout": true}', id="timeout-bool"),
    case("enqueue", '{"command": "true", "timeout": []}', id="timeout-array"),
    case("enqueue", '{"command": "true", "delay": "soon"}', id="delay-string"),
    case("enqueue", '{"command": "true", "run_at": 1735689600}', id="run-at-number"),
    case("enqueue", '{"command": "true", "cwd": 5}', id="cwd-number"),
    case("enqueue", '{"command": "true", "cwd": ""}', id="cwd-empty"),
    case("enqueue", '{"command": "true", "cwd": "/no/such/dir"}', id="cwd-missing"),
    case("enqueue", '{"command": "true", "id": 123}', id="id-number"),
    case("enqueue", '{"command": "true", "id": ["a"]}', id="id-array"),
    case("enqueue", "--job-file", "@job-wrong-type.json", id="job-file-wrong-type"),
    case("enqueue", "--file", "@wrong-type.jsonl", id="file-wrong-type-on-line-2"),
    case("enqueue", "--max-retries", "abc", "true", id="flag-max-retries-string"),
    case("enqueue", "--priority", "1.5", "true", id="flag-priority-fraction"),
    case("enqueue", "--cwd", "/no/such/dir", "true", id="flag-cwd-missing"),
    case("enqueue", "--cwd", "/etc/passwd", "true", id="flag-cwd-is-a-file"),
    # Negative and huge numbers.
    case("enqueue", '{"command": "true", "max_retries": -1}', id="max-retries-negative"),
    case("enqueue", f'{{"command": "true", "max_retries": {BIG}}}', id="max-retries-huge"),
    case("enqueue", '{"command": "true", "max_retries": 1e400}', id="max-retries-overflows-to-inf"),
    case("enqueue", f'{{"command": "true", "priority": {BIG}}}', id="priority-huge"),
    case("enqueue", f'{{"command": "true", "priority": -{BIG}}}', id="priority-huge-negative"),
    case("enqueue", '{"command": "true", "priority": 1' + "0" * 5000 + "}", id="priority-5000-digits"),
    case("enqueue", '{"command": "true", "timeout": -5}', id="timeout-negative"),
    case("enqueue", f'{{"command": "true", "timeout": {BIG}}}', id="timeout-huge"),
    case("enqueue", '{"command": "true", "timeout": 1e400}', id="timeout-inf"),
    case("enqueue", '{"command": "true", "delay": -1}', id="delay-negative"),
    case("enqueue", '{"command": "true", "delay": 1e400}', id="delay-inf"),
    case("enqueue", "--max-retries", "-1", "true", id="flag-max-retries-negative"),
    case("enqueue", "--max-retries", str(BIG), "true", id="flag-max-retries-huge"),
    case("enqueue", "--priority", str(BIG), "true", id="flag-priority-huge"),
    case("enqueue", "--timeout", "-1", "true", id="flag-timeout-negative"),
    case("enqueue", "--timeout", "400d", "true", id="flag-timeout-over-a-year"),
    case("enqueue", "--delay", "99999999999999999999d", "true", id="flag-delay-huge"),
    # Unknown keys, and state a client may not set.
    case("enqueue", '{"command": "true", "owner": "me"}', id="unknown-key"),
    case("enqueue", '{"command": "true", "Command": "false"}', id="unknown-key-case"),
    case("enqueue", '{"command": "true", "worker_id": "w1"}', id="internal-key-worker-id"),
    case("enqueue", '{"command": "true", "seq": 1}', id="internal-key-seq"),
    case("enqueue", "--job-file", "@job-unknown.json", id="job-file-unknown-key"),
    case("enqueue", '{"command": "true", "state": "completed"}', id="client-state-completed"),
    case("enqueue", '{"command": "true", "state": "processing"}', id="client-state-processing"),
    case("enqueue", '{"command": "true", "state": "dead"}', id="client-state-dead"),
    case("enqueue", '{"command": "true", "state": true}', id="client-state-bool"),
    case("enqueue", '{"command": "true", "attempts": 5}', id="client-attempts"),
    case("enqueue", '{"command": "true", "attempts": false}', id="client-attempts-false"),
    case("enqueue", '{"command": "true", "exit_code": 0}', id="client-exit-code"),
    case("enqueue", '{"command": "true", "last_error": "boom"}', id="client-last-error"),
    case("enqueue", "--file", "@state.jsonl", id="file-client-state"),
    # Ids: path tricks, spaces, control characters, length.
    case("enqueue", "--id", "a/b", "true", id="id-slash"),
    case("enqueue", "--id", "../escape", "true", id="id-dotdot-slash"),
    case("enqueue", "--id", "..", "true", id="id-dotdot"),
    case("enqueue", "--id", ".", "true", id="id-dot"),
    case("enqueue", "--id", ".hidden", "true", id="id-leading-dot"),
    case("enqueue", "--id", "-rf", "true", id="id-leading-dash"),
    case("enqueue", "--id", "a b", "true", id="id-space"),
    case("enqueue", "--id", " keep3", "true", id="id-leading-space"),
    case("enqueue", "--id", "a\nb", "true", id="id-newline"),
    case("enqueue", "--id", "a\tb", "true", id="id-tab"),
    case("enqueue", "--id", "a\x1b[31mred", "true", id="id-escape-sequence"),
    case("enqueue", "--id", "a\x7f", "true", id="id-delete-char"),
    case("enqueue", "--id", "caf\u00e9", "true", id="id-non-ascii"),
    case("enqueue", "--id", "a\\b", "true", id="id-backslash"),
    case("enqueue", "--id", "a*", "true", id="id-glob"),
    case("enqueue", "--id", "", "true", id="id-empty"),
    case("enqueue", "--id", "x" * 129, "true", id="id-129-chars"),
    case("enqueue", "--id", LONG_ID, "true", id="id-10k-chars"),
    case("enqueue", '{"command": "true", "id": "a\\u0000b"}', id="id-nul-in-json"),
    case("enqueue", '{"command": "true", "id": "a/b"}', id="id-slash-in-json"),
    case("enqueue", json.dumps({"command": "true", "id": LONG_ID}), id="id-10k-chars-in-json"),
    case("enqueue", "--file", "@bad-id.jsonl", id="file-bad-id-on-line-2"),
    # Conflicting or missing sources.
    case("enqueue", id="enqueue-nothing"),
    case("enqueue", '{"command": "true"}', "extra", id="enqueue-json-and-extra-word"),
    case("enqueue", "--lines", "-", "--file", "-", stdin="true\n", id="lines-and-file"),
    case("enqueue", "true", "--cmd", "false", id="command-twice"),
    case("enqueue", "--cmd", "true", "--command-file", "@huge-command.txt", id="cmd-and-command-file"),
    case("enqueue", "true", "--job-file", "@good.jsonl", id="job-and-job-file"),
    case("enqueue", "--id", "new1", "--file", "@good.jsonl", id="id-with-file"),
    # Operations that cannot be done (exit 1), all or none.
    case("enqueue", "--id", "keep1", "true", code=1, id="duplicate-id"),
    case("enqueue", '{"id": "done", "command": "true"}', code=1, id="duplicate-id-json"),
    case("enqueue", "--file", "@repeat.jsonl", code=1, id="file-repeats-an-id"),
    case("enqueue", "--file", "@taken.jsonl", code=1, id="file-takes-an-existing-id"),
    # Bad durations and dates.
    case("enqueue", "--delay", "5x", "true", id="delay-unit"),
    case("enqueue", "--delay", "-5", "true", id="delay-negative-flag"),
    case("enqueue", "--delay", "1y", "true", id="delay-years"),
    case("enqueue", "--delay", "30m1h", "true", id="delay-units-out-of-order"),
    case("enqueue", "--delay", "", "true", id="delay-empty"),
    case("enqueue", "--delay", "1e400", "true", id="delay-exponent"),
    case("enqueue", "--delay", "nan", "true", id="delay-nan"),
    case("enqueue", "--run-at", "tomorrow", "true", id="run-at-word"),
    case("enqueue", "--run-at", "2025-13-01T00:00:00Z", "true", id="run-at-month-13"),
    case("enqueue", "--run-at", "2025-02-30T00:00:00Z", "true", id="run-at-feb-30"),
    case("enqueue", "--run-at", "2025-01-01T25:00:00Z", "true", id="run-at-hour-25"),
    case("enqueue", "--run-at", "2025-01-01T00:00:00+99:00", "true", id="run-at-bad-offset"),
    case("enqueue", "--run-at", "9999-12-31T23:59:59Z", "true", id="run-at-far-future"),
    case("enqueue", "--run-at", "0001-01-01T00:00:00Z", "true", id="run-at-far-past"),
    case("enqueue", "--run-at", "", "true", id="run-at-empty"),
    case("enqueue", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z", "true", id="delay-and-run-at"),
    case("enqueue", "--timeout", "abc", "true", id="timeout-word"),
    case("wait", "keep1", "--timeout", "abc", id="wait-timeout-word"),
    case("wait", "keep1", "--timeout", "-1", id="wait-timeout-negative"),
    case("wait", "keep1", "--timeout", "nan", id="wait-timeout-nan"),
    case("purge", "--state", "completed", "--older-than", "5x", "--yes", id="purge-older-than-unit"),
    case("purge", "--state", "completed", "--older-than", "-1d", "--yes", id="purge-older-than-negative"),
    case("worker", "stop", "--timeout", "abc", id="stop-timeout-word"),
    # Unknown states, bad numbers and limits.
    case("list", "--state", "bogus", id="list-state-unknown"),
    case("list", "--state", "PENDING", id="list-state-upper-case"),
    case("--home", "", "enqueue", "true", id="home-empty-enqueue"),
    case("--home", " ", "status", id="home-blank-status"),
    case("list", "--state", "", id="list-state-empty"),
    case("list", "--limit", "-1", id="list-limit-negative"),
    case("list", "--limit", "abc", id="list-limit-word"),
    case("dlq", "list", "--limit", "-1", id="dlq-list-limit-negative"),
    case("purge", "--state", "pending", "--yes", id="purge-pending"),
    case("purge", "--state", "bogus", "--yes", id="purge-state-unknown"),
    case("worker", "start", "--count", "0", id="worker-count-0"),
    case("worker", "start", "--count", "257", id="worker-count-257"),
    case("worker", "start", "--count", "abc", id="worker-count-word"),
    # Unknown config keys and bad values.
    case("config", "set", "bogus", "1", id="config-set-unknown-key"),
    case("config", "get", "bogus", id="config-get-unknown-key"),
    case("config", "reset", "bogus", id="config-reset-unknown-key"),
    case("config", "set", "max_retries", "abc", id="config-max-retries-word"),
    case("config", "set", "max_retries", "-1", id="config-max-retries-negative"),
    case("config", "set", "max_retries", "1.5", id="config-max-retries-fraction"),
    case("config", "set", "max_retries", str(BIG), id="config-max-retries-huge"),
    case("config", "set", "max_retries", "", id="config-max-retries-empty"),
    case("config", "set", "backoff_base", "0.5", id="config-backoff-base-below-1"),
    case("config", "set", "lease_seconds", "0", id="config-lease-0"),
    case("config", "set", "poll_interval", "nan", id="config-poll-nan"),
    case("config", "set", "timeout_seconds", "inf", id="config-timeout-inf"),
    case("config", "set", "max_retries", id="config-set-missing-value"),
    # Bad ids where a command takes one.
    case("show", "nope", code=1, id="show-unknown"),
    case("show", "keep", code=1, id="show-ambiguous-prefix"),
    case("show", "a/b", id="show-slash"),
    case("show", "../keep1", id="show-dotdot"),
    case("show", "", id="show-empty"),
    case("show", LONG_ID, id="show-10k-chars"),
    case("show", "keep1\n", id="show-trailing-newline"),
    case("show", id="show-missing-id"),
    case("logs", "nope", code=1, id="logs-unknown"),
    case("logs", "../../etc/passwd", id="logs-path-traversal"),
    case("logs", "keep1/../../../etc/passwd", id="logs-path-traversal-behind-an-id"),
    case("wait", "nope", code=1, id="wait-unknown"),
    case("wait", "keep1", "nope", "--timeout", "1", code=1, id="wait-one-unknown"),
    case("wait", "a b", id="wait-space"),
    case("delete", "nope", code=1, id="delete-unknown"),
    case("delete", "keep1", "nope", code=1, id="delete-one-unknown-deletes-none"),
    case("delete", "keep1", "a/b", id="delete-one-invalid-deletes-none"),
    case("delete", "keep", code=1, id="delete-ambiguous-prefix"),
    case("delete", id="delete-missing-id"),
    case("dlq", "retry", "nope", code=1, id="dlq-retry-unknown"),
    case("dlq", "retry", "keep1", code=1, id="dlq-retry-not-dead"),
    case("dlq", "retry", "doomed", "keep1", code=1, id="dlq-retry-one-not-dead-retries-none"),
    case("dlq", "retry", "../doomed", id="dlq-retry-dotdot"),
    case("dlq", "retry", id="dlq-retry-nothing"),
    case("dlq", "retry", "doomed", "--all", id="dlq-retry-id-and-all"),
    # Queues and dependencies (issue 11).
    case("enqueue", "--queue", "a b", "true", id="queue-space"),
    case("enqueue", "--queue", "", "true", id="queue-empty"),
    case("enqueue", "--queue", "q" * 65, "true", id="queue-65-chars"),
    case("enqueue", "--queue=-q", "true", id="queue-leading-dash"),
    case("enqueue", "--queue", "../etc", "true", id="queue-dotdot"),
    case("enqueue", '{"command": "true", "queue": 7}', id="queue-not-a-string"),
    case("enqueue", "--after", "nope", "true", code=1, id="after-unknown"),
    case("enqueue", "--after", "keep1", "--after", "nope", "true", code=1, id="after-one-unknown"),
    case("enqueue", "--after", "keep", "true", code=1, id="after-ambiguous-prefix"),
    case("enqueue", "--id", "new1", "--after", "new1", "true", id="after-itself"),
    case("enqueue", "--after", LONG_ID, "true", id="after-10k-chars"),
    case("enqueue", '{"command": "true", "after": "keep1 keep2"}', id="after-string-with-space"),
    case("enqueue", '{"command": "true", "after": {"id": "keep1"}}', id="after-object"),
    case("enqueue", '{"command": "true", "after": [' + ",".join(['"keep1"'] * 1001) + "]}", id="after-1001"),
    case("enqueue", "--file", "@cycle.jsonl", id="file-cycle"),
    case("enqueue", "--file", "@self.jsonl", id="file-self"),
    case("enqueue", "--file", "@unknown-after.jsonl", code=1, id="file-unknown-after"),
    case("enqueue", "--file", "@bad-queue.jsonl", id="file-bad-queue"),
    case("queue", "limit", "steer", "-1", id="limit-negative"),
    case("queue", "limit", "steer", "1.5", id="limit-fraction"),
    case("queue", "limit", "steer", "1e3", id="limit-exponent"),
    case("queue", "limit", "steer", str(BIG), id="limit-huge"),
    case("queue", "limit", "steer", "", id="limit-empty"),
    case("queue", "limit", "a b", "1", id="limit-bad-name"),
    case("queue", "limit", id="limit-nothing"),
    case("pause", "a/b", id="pause-bad-name"),
    case("pause", "ok", "*", id="pause-one-bad-name-pauses-none"),
    case("resume", "held", "", id="resume-one-empty-name-resumes-none"),
    case("list", "--queue", "", id="list-queue-empty"),
    case("worker", "start", "--queue", "a b", "--burst", id="worker-queue-bad-name"),
    case("requeue", "keep1", code=1, id="requeue-pending"),
    case("requeue", "done", "keep1", code=1, id="requeue-one-pending-requeues-none"),
    case("requeue", "nope", code=1, id="requeue-unknown"),
    case("requeue", id="requeue-nothing"),
    case("delete", "keep2", code=1, id="delete-a-job-waited-for"),
    # Run history: stats and metrics.
    case("stats", "--since", "5x", id="stats-since-unit"),
    case("stats", "--since", "0", id="stats-since-zero"),
    case("stats", "--since", "1y", id="stats-since-years"),
    case("stats", "--since", "32d", id="stats-since-past-retention"),
    case("stats", "--since", "2999-01-01T00:00:00Z", id="stats-since-future"),
    case("stats", "--since", "", id="stats-since-empty"),
    case("stats", "--queue", "a/b", id="stats-queue-slash"),
    case("stats", "--queue", "", id="stats-queue-empty"),
    case("metrics", "--output", "@", id="metrics-output-a-directory"),
    case("metrics", "--output", "@missing/q.prom", code=1, id="metrics-output-missing-directory"),
    # Usage.
    case("bogus", id="unknown-command"),
    case("", id="empty-command"),
    case("list", "--bogus", id="unknown-option"),
    case("dlq", "bogus", id="unknown-subcommand"),
]


def _materialize(args: tuple, folder) -> list:
    out = []
    for arg in args:
        if arg.startswith("@"):
            name = arg[1:]
            path = folder / name if name else folder
            if name in FILES:
                content = FILES[name]
                path.write_bytes(content if isinstance(content, bytes) else content.encode())
            arg = str(path)
        out.append(arg)
    return out


@pytest.mark.parametrize("args, code, stdin", CASES)
def test_hostile_input_is_refused_cleanly_and_changes_nothing(qhome, tmp_path, args, code, stdin):
    folder = tmp_path / "input"
    folder.mkdir()
    argv = _materialize(args, folder)
    before = snapshot(qhome)
    result = run_cli(qhome, *argv, input=stdin, cwd=str(folder))
    assert_one_error_line(result, code)
    assert snapshot(qhome) == before


# -- odd input that may be accepted, but never with a traceback ----------------------------------

@pytest.mark.parametrize("args", [
    ("enqueue", "--id", "new1", os.fsdecode(b"echo caf\xe9")),
    ("enqueue", '{"id": "new1", "command": "echo \\ud800"}'),
], ids=["argv-latin1", "json-lone-surrogate"])
def test_a_command_that_is_not_utf8_is_stored_or_refused_never_a_traceback(qhome, args):
    before = snapshot(qhome)
    result = run_cli(qhome, *args)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert Cli(qhome).json("show", "new1")["state"] == "pending"
    else:
        assert_one_error_line(result, 2)
        assert snapshot(qhome) == before


@pytest.mark.parametrize("command", [("list",), ("dlq", "list")], ids=["list", "dlq-list"])
def test_a_huge_limit_lists_everything_or_is_refused_never_a_traceback(qhome, command):
    before = snapshot(qhome)
    result = run_cli(qhome, *command, "--limit", str(BIG), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert len(json.loads(result.stdout)) == (5 if command == ("list",) else 1)
    else:
        assert_one_error_line(result, 2)
    assert snapshot(qhome) == before


# -- a queue home that cannot be created ---------------------------------------------------------

HOME_COMMANDS = [
    ("status",), ("list",), ("enqueue", "true"), ("show", "keep1"), ("config", "get"),
    ("config", "set", "max_retries", "1"), ("worker", "start", "--burst"), ("worker", "start", "--detach"),
    ("worker", "stop"), ("worker", "status"), ("dlq", "list"),
]


HOME_CASES = [("under-a-file", c) for c in HOME_COMMANDS] + [("is-a-file", c) for c in HOME_COMMANDS[:3]]


@pytest.mark.parametrize("where, command", HOME_CASES, ids=[f"{w}-{'-'.join(c)}" for w, c in HOME_CASES])
def test_a_home_that_cannot_be_created_is_reported_with_its_path(tmp_path, where, command):
    # Tests run as root, so no chmod can stop us: a regular file in the way does.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory\n")
    home = str(blocker / "qhome") if where == "under-a-file" else str(blocker)
    result = run_cli(home, *command, cwd=str(tmp_path))
    line = assert_one_error_line(result, 2)  # bad input: that path cannot be a directory
    assert home in line and "is not a directory" in line
    assert blocker.read_text() == "not a directory\n"
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


# -- a corrupt config.json -----------------------------------------------------------------------

CORRUPT_CONFIGS = {
    "not-json": b"{not json",
    "array": b"[1, 2]",
    "bad-value": b'{"max_retries": -1}',
    "wrong-type": b'{"lease_seconds": "soon"}',
    "binary": b"\xff\xfe\x00garbage",
}
CONFIG_COMMANDS = [
    ("status",), ("enqueue", "true"), ("config", "get"), ("config", "get", "max_retries"),
    ("config", "set", "max_retries", "5"), ("config", "reset", "max_retries"),
    ("worker", "start", "--burst"), ("worker", "start", "--detach"), ("worker", "status"),
    ("stats",), ("metrics",),
]


# Every command that reads the settings, with one corruption; the others with two commands.
CONFIG_CASES = [("not-json", c) for c in CONFIG_COMMANDS] + [
    (kind, c) for kind in list(CORRUPT_CONFIGS)[1:] for c in (("status",), ("config", "set", "max_retries", "5"))]


@pytest.mark.parametrize("kind, command", CONFIG_CASES, ids=[f"{k}-{'-'.join(c)}" for k, c in CONFIG_CASES])
def test_a_corrupt_config_is_reported_with_its_path_and_left_alone(qhome, kind, command):
    content = CORRUPT_CONFIGS[kind]
    path = os.path.join(qhome, "config.json")
    with open(path, "wb") as handle:
        handle.write(content)
    jobs = Cli(qhome).json("list", "--limit", "0")  # list needs no settings
    try:
        result = run_cli(qhome, *command)
        line = assert_one_error_line(result, 1)
    finally:
        if command[-1] == "--detach":  # should it have started after all
            Pools(qhome).cleanup()
    assert "config" in line and path in line, line
    with open(path, "rb") as handle:
        assert handle.read() == content
    assert Cli(qhome).json("list", "--limit", "0") == jobs


# -- a queue.db that is not SQLite ---------------------------------------------------------------

def _random_bytes(home: str) -> None:
    with open(os.path.join(home, "queue.db"), "wb") as handle:
        handle.write(random.Random(7).randbytes(8192))


def _text(home: str) -> None:
    with open(os.path.join(home, "queue.db"), "w") as handle:
        handle.write("these are my notes, not a database\n" * 50)


def _truncated(home: str) -> None:
    os.truncate(os.path.join(home, "queue.db"), 4096)


def _directory(home: str) -> None:
    path = os.path.join(home, "queue.db")
    os.unlink(path)
    os.mkdir(path)


BROKEN_DATABASES = {"random-bytes": _random_bytes, "text": _text, "truncated": _truncated,
                    "directory": _directory}
DB_COMMANDS = [
    ("status",), ("list",), ("enqueue", "true"), ("enqueue", "--file", "-"), ("show", "keep1"),
    ("logs", "keep1"), ("wait", "keep1", "--timeout", "1"), ("delete", "keep1"), ("dlq", "list"),
    ("dlq", "retry", "--all"), ("purge", "--state", "dead", "--yes"), ("worker", "start", "--burst"),
    ("worker", "start", "--detach"), ("worker", "status"), ("stats",), ("metrics",),
]


def _db_state(path: str):
    if os.path.isdir(path):
        return "directory", sorted(os.listdir(path))
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# Every command that opens the database, with one breakage; the others with two commands.
DB_CASES = [("random-bytes", c) for c in DB_COMMANDS] + [
    (kind, c) for kind in list(BROKEN_DATABASES)[1:] for c in (("status",), ("enqueue", "true"))]


@pytest.mark.parametrize("breakage, command", DB_CASES, ids=[f"{k}-{'-'.join(c)}" for k, c in DB_CASES])
def test_a_database_that_is_not_sqlite_is_reported_with_its_path(qhome, breakage, command):
    BROKEN_DATABASES[breakage](qhome)
    path = os.path.join(qhome, "queue.db")
    before, files = _db_state(path), files_of(qhome)
    try:
        result = run_cli(qhome, *command, input='{"command": "true"}\n')
        line = assert_one_error_line(result, 1)
    finally:
        if command[-1] == "--detach":  # should it have started after all
            Pools(qhome).cleanup()
    assert path in line and "database" in line, line
    assert _db_state(path) == before
    assert files_of(qhome) == files


# -- private modes -------------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_the_home_is_0700_and_every_file_in_it_0600(tmp_path, umask):
    """Commands and their output may hold secrets: whatever the caller's umask."""
    home = str(tmp_path / "qhome")
    pools = Pools(home)
    old = os.umask(umask)
    try:
        def ok(*args: str) -> None:
            result = run_cli(home, *args, cwd=str(tmp_path))
            assert result.returncode == 0, result.stderr

        ok("enqueue", "--id", "secret", "echo password123")
        ok("config", "set", "max_retries", "2")
        ok("worker", "start", "--burst")  # writes logs/secret.log
        pools.start(1)  # a running pool: its pidfile, pools.log, and open WAL files
        wait_until(lambda: all(os.path.exists(os.path.join(home, f"queue.db-{end}")) for end in ("wal", "shm")),
                   what="the workers to open the database")
        modes = {}
        for folder, dirs, names in os.walk(home):
            for name in dirs + names:
                path = os.path.join(folder, name)
                modes[os.path.relpath(path, home)] = stat.S_IMODE(os.lstat(path).st_mode)
        home_mode = stat.S_IMODE(os.stat(home).st_mode)
    finally:
        os.umask(old)
        pools.cleanup()
    assert home_mode == 0o700
    assert modes.pop("logs") == 0o700
    pidfiles = [name for name in modes if name.startswith("pool-") and name.endswith(".pid")]
    assert len(pidfiles) == 1, modes
    for name in ("queue.db", "queue.db-wal", "queue.db-shm", "config.json", "logs/secret.log",
                 "pools.log", pidfiles[0]):
        assert modes.pop(name) == 0o600, name
    assert modes == {}, f"unexpected files: {modes}"
