"""Commands on jobs: enqueue, list, show, logs, wait, delete, purge."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from .. import jobspec, render
from ..models import FINISHED, STATES
from ..timeutil import now, parse_duration
from . import DEFAULT_PAGE, MAX_PAGE, App, cli, confirm, json_option, pass_app, yes_option



# -- enqueue -----------------------------------------------------------------------------------

@cli.command()
@click.argument("job", required=False)
@click.option("--id", "job_id", help="Job id (default: generated).")
@click.option("--cmd", "--command", "command", help="The shell command to run.")
@click.option("--command-file", metavar="PATH", help="Read the command from a file.")
@click.option("--job-file", metavar="PATH", help="Read one job (a JSON object) from a file.")
@click.option("--file", "many_file", metavar="PATH|-", help="Many jobs: JSON Lines or a JSON array; all or none.")
@click.option("--max-retries", type=int, help="Retries after the first run (default: config).")
@click.option("--priority", type=int, help="Lower runs first (default 0).")
@click.option("--delay", metavar="D", help="Run no sooner than D from now: 30, 30s, 5m, 2h, 1d.")
@click.option("--run-at", metavar="ISO8601", help="Run no sooner than this time (UTC unless an offset is given).")
@click.option("--timeout", metavar="S", help="Seconds a run may take; 0 = no limit (default: config).")
@click.option("--cwd", metavar="DIR", help="Directory to run in (default: the current one).")
@click.option("--if-absent", is_flag=True, help="An existing id is not an error: exit 0, change nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the id.")
@json_option
@pass_app
def enqueue(app: App, job, job_id, command, command_file, job_file, many_file, max_retries, priority,
            delay, run_at, timeout, cwd, if_absent, quiet, as_json) -> None:
    """Add a job: a JSON object or a plain command string.

    \b
    Examples:
      queuectl enqueue "make backup"
      queuectl enqueue '{"id":"job1","command":"sleep 2"}'
      queuectl enqueue --priority -5 --delay 10m --timeout 60 "./report.sh"
      queuectl enqueue --file jobs.jsonl
    """
    settings = app.settings()
    flags = {"id": job_id, "max_retries": max_retries, "priority": priority, "delay": delay,
             "run_at": run_at, "timeout": timeout, "cwd": cwd}
    defaults = jobspec.Defaults(settings["max_retries"], settings["timeout_seconds"], os.getcwd(), now())
    jobs = jobspec.collect(job, job_file, many_file, command, command_file, flags, defaults)
    inserted = app.store.insert(jobs, defaults.now, if_absent=if_absent)
    if many_file is None:
        _report_one(app, jobs[0].id or inserted[0], bool(inserted), quiet, as_json)
    else:
        _report_many(app, inserted, len(jobs), quiet, as_json)


def _report_one(app: App, job_id: str, inserted: bool, quiet: bool, as_json: bool) -> None:
    job = app.store.get(job_id)
    if as_json:
        render.emit_json(job.to_dict())
    elif quiet:
        click.echo(job_id)
    elif not inserted:
        click.echo(f"Job {job_id} exists already ({job.state}); nothing changed")
    else:
        when = "" if job.run_at <= job.created_at else f", runs at {job.to_dict()['run_at']}"
        click.echo(f"Enqueued job {job_id}{when}")


def _report_many(app: App, inserted: list, given: int, quiet: bool, as_json: bool) -> None:
    if as_json:
        render.emit_json([app.store.get(job_id).to_dict() for job_id in inserted])
    elif quiet:
        if inserted:
            click.echo("\n".join(inserted))
    else:
        skipped = given - len(inserted)
        click.echo(f"Enqueued {len(inserted)} jobs" + (f" ({skipped} existed already)" if skipped else ""))


# -- reading -----------------------------------------------------------------------------------

state_choice = click.Choice(STATES)


@cli.command(name="list")
@click.option("--state", type=state_choice, help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(0, MAX_PAGE), default=DEFAULT_PAGE, show_default=True,
              help="Jobs to show; 0 = all.")
@json_option
@pass_app
def list_(app: App, state: Optional[str], limit: int, as_json: bool) -> None:
    """List jobs: claim order for pending/failed, newest first otherwise.

    \b
    Example:
      queuectl list --state pending --limit 20
    """
    jobs = app.store.list_jobs(state, limit or None)
    counts = app.store.counts()
    total = counts[state] if state else sum(counts.values())
    if as_json:
        render.emit_json([job.to_dict() for job in jobs])
    elif jobs:
        click.echo(render.jobs_table(jobs))
    else:
        render.message(f"No {state + ' ' if state else ''}jobs.")
    if total > len(jobs):
        render.message(f"... {total - len(jobs)} more; use --limit N (0 for all) to see them")


@cli.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_app
def show(app: App, job_id: str, as_json: bool) -> None:
    """Show one job in full, with its runs and its log file's path.

    \b
    Example:
      queuectl show job1
    """
    job = app.store.get(app.resolve_ids((job_id,))[0])
    runs = app.store.runs_of(job)
    if as_json:
        render.emit_json({**job.to_dict(), "runs": [run.to_dict() for run in runs],
                          "log": app.home.log_path(job.id)})
        return
    click.echo(render.job_detail(job, app.home.log_path(job.id)))
    click.echo()
    click.echo(render.runs_table(runs) if runs else "No runs yet.")


@cli.command()
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@pass_app
def logs(app: App, job_id: str, follow: bool) -> None:
    """Print a job's output (every run, each under a header line).

    \b
    Example:
      queuectl logs job1 --follow
    """
    from ..watch import print_log

    full_id = app.resolve_ids((job_id,))[0]
    print_log(app.store, full_id, app.home.log_path(full_id), follow)


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", metavar="S", help="Give up after S seconds (exit 124).")
@pass_app
def wait(app: App, job_ids: tuple, timeout: Optional[str]) -> None:
    """Block until each job is completed or dead: exit 0 if all completed, 1 otherwise, 124 on timeout.

    \b
    Example:
      queuectl wait job1 job2 --timeout 60
    """
    from ..watch import wait_for

    limit = None if timeout is None else parse_duration(timeout, "timeout")
    ids = app.resolve_ids(job_ids)
    sys.exit(wait_for(app.store, ids, limit))


# -- removing ----------------------------------------------------------------------------------

@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@pass_app
def delete(app: App, job_ids: tuple) -> None:
    """Remove jobs (and their logs) that are not processing; all or none.

    \b
    Example:
      queuectl delete job1 job2
    """
    ids = app.resolve_ids(job_ids)
    app.store.delete(ids)
    remove_logs(app, ids)
    click.echo(f"Deleted {len(ids)} job(s)")


@cli.command()
@click.option("--state", type=click.Choice(FINISHED), required=True, help="completed or dead.")
@click.option("--older-than", metavar="D", help="Only jobs last changed more than D ago: 30m, 7d.")
@yes_option
@pass_app
def purge(app: App, state: str, older_than: Optional[str], yes: bool) -> None:
    """Delete finished jobs and their logs (retention).

    \b
    Example:
      queuectl purge --state completed --older-than 7d --yes
    """
    cutoff = None if older_than is None else now() - parse_duration(older_than, "--older-than")
    confirm(f"Delete {state} jobs{' older than ' + older_than if older_than else ''}?", yes)
    ids = app.store.purge(state, cutoff)
    remove_logs(app, ids)
    click.echo(f"Purged {len(ids)} {state} job(s)")


def remove_logs(app: App, ids: list) -> None:
    for job_id in ids:
        try:
            os.unlink(app.home.log_path(job_id))
        except FileNotFoundError:
            pass
