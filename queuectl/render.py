"""Output for people (tabulate tables) and for scripts (--json); data to stdout, messages to stderr."""
from __future__ import annotations

from typing import Optional

import click

from .models import Job
from .timeutil import short_iso


def emit_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def message(text: str) -> None:
    """A note for the person at the terminal, kept out of the data on stdout."""
    click.echo(text, err=True)


def table(rows: list, headers: list) -> str:
    from tabulate import tabulate  # only the commands that draw tables pay for this import

    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _clip(text: Optional[str], width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _tries(job: Job) -> str:
    return f"{job.attempts}/{job.max_retries + 1}"


def jobs_table(jobs: list) -> str:
    rows = [
        (job.id, job.state, _tries(job), job.priority, short_iso(job.run_at), _clip(job.command, 40),
         _clip(job.last_error, 40))
        for job in jobs
    ]
    return table(rows, ["ID", "STATE", "TRIES", "PRI", "RUN AT (UTC)", "COMMAND", "LAST ERROR"])


def dead_table(jobs: list) -> str:
    rows = [(job.id, job.attempts, job.exit_code if job.exit_code is not None else "-",
             short_iso(job.updated_at), _clip(job.command, 40), _clip(job.last_error, 60)) for job in jobs]
    return table(rows, ["ID", "ATTEMPTS", "EXIT", "DIED (UTC)", "COMMAND", "LAST ERROR"])


def job_detail(job: Job, log_path: str) -> str:
    data = job.to_dict()
    data["attempts"] = f"{job.attempts} (up to {job.max_retries + 1} runs: max_retries {job.max_retries})"
    data["timeout"] = "none" if not job.timeout else f"{job.timeout:g}s"
    data["log"] = log_path
    width = max(len(key) for key in data) + 1
    return "\n".join(f"{key + ':':<{width}} {'-' if value is None else value}" for key, value in data.items())


def counts_table(counts: dict) -> str:
    return table([(state, str(n)) for state, n in counts.items()], ["STATE", "JOBS"])


def workers_table(workers: list) -> str:
    rows = [(w.pid, w.pool_id, w.host, w.job_id or "(idle)", short_iso(w.job_since or w.started_at))
            for w in workers]
    return table(rows, ["PID", "POOL", "HOST", "JOB", "SINCE (UTC)"])


clip = _clip
SHOWN_RUNS = 20  # `show` lists the last runs; `show --json` all of them


def runs_table(runs: list) -> str:
    from .stats import human

    shown = runs[-SHOWN_RUNS:]
    rows = [(run.attempt, short_iso(run.started_at), human(run.ended_at - run.started_at), run.outcome,
             "-" if run.exit_code is None else run.exit_code, _clip(run.worker, 24), _clip(run.error, 50))
            for run in shown]
    text = table(rows, ["RUN", "STARTED (UTC)", "TOOK", "OUTCOME", "EXIT", "WORKER", "ERROR"])
    if len(runs) > len(shown):
        text = f"({len(runs) - len(shown)} earlier runs not shown; `show --json` lists them all)\n" + text
    return text
