"""End to end: the classic path of a job through a real worker pool."""
from __future__ import annotations

import json

from conftest import run_cli


def test_burst_pool_runs_jobs_to_completed_and_dead(home, workdir):
    assert run_cli(home, "enqueue", "--id", "ok", "echo hello", cwd=workdir).returncode == 0
    assert run_cli(home, "enqueue", "--id", "bad", "--max-retries", "1", "exit 3", cwd=workdir).returncode == 0
    assert run_cli(home, "config", "set", "backoff_base", "1").returncode == 0

    result = run_cli(home, "worker", "start", "--count", "2", "--burst")
    assert result.returncode == 0, result.stderr

    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert (status["completed"], status["dead"]) == (1, 1)
    bad = json.loads(run_cli(home, "show", "bad", "--json").stdout)
    assert (bad["state"], bad["attempts"], bad["exit_code"]) == ("dead", 2, 3)
    assert "hello" in run_cli(home, "logs", "ok").stdout
