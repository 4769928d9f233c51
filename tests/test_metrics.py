"""`metrics`: Prometheus text format 0.0.4, read back by the real Prometheus parser."""
from __future__ import annotations

import math
import os
import stat
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import open_home_store, run_cli, store_sql
from queuectl import metrics
from queuectl.home import QueueHome
from queuectl.models import NewJob, Outcome
from queuectl.store.sqlite import SqliteStore as Store
from queuectl.stats import PROMETHEUS_EDGES
from queuectl.worker import record_outcome

pytestmark = pytest.mark.both_backends  # see conftest: each test on SQLite and on PostgreSQL

T0 = time.time() - 600
SETTINGS = {"backoff_base": 2, "backoff_max": 3600}


def parse(text: str) -> dict:
    """{family name: (type, help, {(sample name, sorted labels): value})}."""
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = (family.type, family.documentation, samples)
    return families


@pytest.fixture
def store(home):
    opened = open_home_store(home)
    yield opened
    opened.close()


def finish(store, job_id, took, outcome=Outcome(0, None), retries=0):
    store.insert([NewJob(job_id, "true", retries, 0, None, T0, "/")], T0)
    job = store.claim_next("w", T0)
    assert job.id == job_id
    record_outcome(store, SETTINGS, job, "w", outcome, T0 + took)


def scrape(cli) -> dict:
    result = cli("metrics")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n") and not result.stderr
    return parse(result.stdout)


def test_every_family_with_help_type_and_base_units(store, cli):
    for n, took in enumerate([0.003, 0.2, 0.2, 1.5, 30.0]):
        finish(store, f"ok{n}", took)
    finish(store, "bad", 4.0, Outcome(1, "exit code 1"))
    finish(store, "late", 7.0, Outcome(None, "timed out after 7s", kind="timeout"))
    store.insert([NewJob("due", "true", 3, 0, None, time.time() - 90, "/")], T0)
    got = scrape(cli)
    # The parser drops a counter's _total suffix from the family name.
    assert {name: kind for name, (kind, _, _) in got.items()} == {
        "queuectl_jobs": "gauge", "queuectl_runs": "counter", "queuectl_run_duration_seconds": "histogram",
        "queuectl_oldest_due_seconds": "gauge", "queuectl_workers": "gauge", "queuectl_paused": "gauge"}
    assert all(help_text for _, help_text, _ in got.values())
    jobs = got["queuectl_jobs"][2]
    assert jobs[("queuectl_jobs", (("queue", "default"), ("state", "completed")))] == 5
    assert jobs[("queuectl_jobs", (("queue", "default"), ("state", "dead")))] == 2
    assert jobs[("queuectl_jobs", (("queue", "default"), ("state", "pending")))] == 1
    runs = got["queuectl_runs"][2]
    assert {dict(labels)["outcome"]: v for (_, labels), v in runs.items()} == {
        "completed": 5, "failed": 1, "timeout": 1, "lost": 0, "interrupted": 0, "cancelled": 0}
    hist = got["queuectl_run_duration_seconds"][2]
    buckets = {dict(labels)["le"]: v for (name, labels), v in hist.items() if name.endswith("_bucket")}
    assert list(buckets) == [metrics._number(edge) for edge in PROMETHEUS_EDGES] + ["+Inf"]
    assert buckets["0.005"] == 1 and buckets["0.25"] == 3 and buckets["2.5"] == 4 and buckets["5"] == 5
    assert buckets["10"] == 6 and buckets["25"] == 6 and buckets["50"] == 7 and buckets["+Inf"] == 7
    values = list(buckets.values())
    assert values == sorted(values)  # cumulative
    count = hist[("queuectl_run_duration_seconds_count", (("queue", "default"),))]
    total = hist[("queuectl_run_duration_seconds_sum", (("queue", "default"),))]
    assert count == 7 and total == pytest.approx(0.003 + 0.2 + 0.2 + 1.5 + 30 + 4 + 7)
    oldest = got["queuectl_oldest_due_seconds"][2][("queuectl_oldest_due_seconds", (("queue", "default"),))]
    assert 90 <= oldest < 200
    assert got["queuectl_workers"][2] == {("queuectl_workers", ()): 0}


def test_counters_never_decrease_when_jobs_are_deleted_or_purged(store, cli):
    for n in range(4):
        finish(store, f"ok{n}", 1.0)
    finish(store, "bad", 1.0, Outcome(1, "exit code 1"))
    before = scrape(cli)
    assert cli("delete", "ok0").exit_code == 0
    assert cli("purge", "--state", "completed", "--yes").exit_code == 0
    assert cli("dlq", "purge", "--yes").exit_code == 0
    after = scrape(cli)
    for family in ("queuectl_runs", "queuectl_run_duration_seconds"):
        assert after[family] == before[family]
    assert after["queuectl_jobs"] != before["queuectl_jobs"]  # the gauges do follow the jobs
    assert store_sql(store, "SELECT count(*) FROM runs")[0][0] == 0  # runs went with their jobs


def test_an_empty_queue_still_shows_every_family(cli):
    got = scrape(cli)
    assert len(got) == 6
    assert got["queuectl_run_duration_seconds"][2] == {}
    assert got["queuectl_paused"][2] == {}  # until queues can be paused


def test_label_values_and_help_are_escaped_and_parse_back():
    queue = 'odd "queue" \\ with\nnewline'
    text = metrics.render(metrics.Figures(
        jobs={queue: {"pending": 2}}, runs=[(queue, "completed", 3, 1.5, {10: 3})],
        oldest_due={queue: 1.25}, workers=1, paused={queue: True}))
    got = parse(text)
    assert got["queuectl_jobs"][2][("queuectl_jobs", (("queue", queue), ("state", "pending")))] == 2
    assert got["queuectl_paused"][2] == {("queuectl_paused", (("queue", queue),)): 1}
    assert got["queuectl_oldest_due_seconds"][2][("queuectl_oldest_due_seconds", (("queue", queue),))] == 1.25
    assert 'queue="odd \\"queue\\" \\\\ with\\nnewline"' in text


def test_number_formatting():
    assert [metrics._number(v) for v in (3, 2.0, 0.25, math.inf, 1e-3)] == ["3", "2", "0.25", "+Inf", "0.001"]


# -- --output ------------------------------------------------------------------------------------

def test_output_writes_the_file_atomically_and_readable_by_the_collector(store, home, tmp_path):
    finish(store, "ok", 1.0)
    target = tmp_path / "textfile" / "queuectl.prom"
    target.parent.mkdir()
    target.write_text("old contents\n")
    result = run_cli(home, "metrics", "--output", str(target))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    text = target.read_text()
    assert parse(text)["queuectl_runs"][2][("queuectl_runs_total", (("outcome", "completed"), ("queue", "default")))] == 1
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert os.listdir(target.parent) == ["queuectl.prom"]  # no temporary file left behind
    assert text == run_cli(home, "metrics").stdout


@pytest.mark.sqlite_only
def test_output_into_a_missing_directory_fails_cleanly(home, tmp_path):
    result = run_cli(home, "metrics", "--output", str(tmp_path / "nowhere" / "q.prom"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "nowhere").exists()
    assert str(tmp_path / "nowhere" / "q.prom") in result.stderr  # the file asked for, not a temporary name


@pytest.mark.parametrize("target", ["", "dir"])
@pytest.mark.sqlite_only
def test_output_must_name_a_file(home, tmp_path, target):
    result = run_cli(home, "metrics", "--output", str(tmp_path) if target else "")
    assert result.returncode == 2 and result.stderr.startswith("Error: invalid --output")
    assert os.listdir(tmp_path) == ["qhome"]
