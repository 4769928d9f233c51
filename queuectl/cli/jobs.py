"""Commands on jobs: enqueue, list, show, logs, wait, delete, purge, cancel."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from .. import jobspec, render
from ..errors import BadInput, Conflict, QueuectlError
from ..models import COMPLETED, FAILED, FINISHED, PENDING, PROCESSING, STATES
from ..timeutil import human_seconds, parse_duration
from . import DEFAULT_PAGE, MAX_PAGE, App, cli, confirm, json_option, pass_app, yes_option

# Progress bars (stderr, a terminal only) start at these sizes: below them the work is quick.
ENQUEUE_PROGRESS_MIN = 20_000
WAIT_PROGRESS_MIN = 10
PURGE_PROGRESS_MIN = 1_000


# -- enqueue -----------------------------------------------------------------------------------

class EnqueueCommand(click.Command):
    """`enqueue ls -la` fails on `-l`: say that a command's options go after `--`."""

    def parse_args(self, ctx: click.Context, args: list) -> list:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if not exc.possibilities:
                exc.message = exc.message.rstrip(".") + (
                    " (if it is the command's, put the command after --: queuectl enqueue -- ls -la)")
            raise


@cli.command(cls=EnqueueCommand)
@click.argument("job", nargs=-1)
@click.option("--id", "job_id", help="Job id (default: generated).")
@click.option("--queue", metavar="NAME", help="The named queue it belongs to (default: default).")
@click.option("--after", metavar="ID", multiple=True, help="Run only after job ID has completed (repeatable).")
@click.option("--cmd", "--command", "command", help="The shell command to run.")
@click.option("--command-file", metavar="PATH|-", help="Read the command from a file (- for standard input).")
@click.option("--job-file", metavar="PATH", help="Read one job (a JSON object) from a file.")
@click.option("--file", "many_file", metavar="PATH|-", help="Many jobs: JSON Lines or a JSON array; all or none.")
@click.option("--lines", "lines_file", metavar="PATH|-",
              help="Many jobs, one command a line (blank lines and # comments skipped); all or none.")
@click.option("--max-retries", type=int, help="Retries after the first run (default: config).")
@click.option("--priority", type=int, help="Lower runs first (default 0).")
@click.option("--delay", metavar="D", help="Run no sooner than D from now: 30, 30s, 5m, 1h30m, 1d, 1w.")
@click.option("--run-at", metavar="ISO8601", help="Run no sooner than this time (UTC unless an offset is given).")
@click.option("--timeout", metavar="S", help="Seconds a run may take; 0 = no limit (default: config).")
@click.option("--cwd", metavar="DIR", help="Directory to run in (default: the current one).")
@click.option("--if-absent", is_flag=True, help="An existing id is not an error: exit 0, change nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the id.")
@json_option
@pass_app
def enqueue(app: App, job, job_id, queue, after, command, command_file, job_file, many_file, lines_file,
            max_retries, priority, delay, run_at, timeout, cwd, if_absent, quiet, as_json) -> None:
    """Add a job: a JSON object or a plain command (several words are one command).

    \b
    Examples:
      queuectl enqueue make backup
      queuectl enqueue -- ls -la /srv
      queuectl enqueue '{"id":"job1","command":"sleep 2"}'
      queuectl enqueue --priority -5 --delay 1h30m --timeout 60 ./report.sh
      queuectl enqueue --file jobs.jsonl
      find . -name '*.wav' | sed 's/.*/flac "&"/' | queuectl enqueue --lines -
      queuectl enqueue --queue downloads "curl -O https://example.com/big.iso"
      queuectl enqueue --id deploy --after build ./deploy.sh
    """
    settings = app.settings()
    flags = {"id": job_id, "queue": queue, "after": list(after) or None, "max_retries": max_retries,
             "priority": priority, "delay": delay, "run_at": run_at, "timeout": timeout, "cwd": cwd}
    defaults = jobspec.Defaults(settings["max_retries"], settings["timeout_seconds"], os.getcwd(), app.store.clock())
    jobs = jobspec.collect(job, job_file, many_file, command, command_file, flags, defaults, lines_file)
    with render.progress(len(jobs), ENQUEUE_PROGRESS_MIN, "enqueued") as update:
        inserted = app.store.insert(jobs, defaults.now, if_absent=if_absent, progress=update)
    if many_file is None and lines_file is None:
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
        existed = f" ({skipped} existed already)" if skipped else ""
        click.echo(f"Enqueued {render.plural(len(inserted), 'job')}{existed}")


# -- reading -----------------------------------------------------------------------------------

state_choice = click.Choice(STATES)


@cli.command(name="list")
@click.option("--state", type=state_choice, help="Only jobs in this state.")
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@click.option("--limit", type=click.IntRange(0, MAX_PAGE), default=DEFAULT_PAGE, show_default=True,
              help="Jobs to show; 0 = all.")
@json_option
@pass_app
def list_(app: App, state: Optional[str], queue: Optional[str], limit: int, as_json: bool) -> None:
    """List jobs: claim order for pending/failed (those waiting for unfinished jobs last),
    newest first otherwise.

    \b
    Examples:
      queuectl list --state pending --limit 20
      queuectl list --queue downloads
    """
    if queue is not None:
        jobspec.validate_queue(queue)
    jobs = app.store.list_jobs(state, limit or None, queue)
    total = app.store.count(state, queue)
    if as_json:
        render.emit_json([job.to_dict() for job in jobs])
    elif jobs:
        click.echo(render.jobs_table(jobs))
    else:
        render.message(f"No {state + ' ' if state else ''}jobs{' in queue ' + queue if queue else ''}.")
    if total > len(jobs):
        render.message(f"... {total - len(jobs)} more; use --limit N (0 for all) to see them")


@cli.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_app
def show(app: App, job_id: str, as_json: bool) -> None:
    """Show one job in full: its runs, what it still waits for, its log file's path.

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
    click.echo(render.job_detail(job, app.home.log_path(job.id), _run_pid(app, job)))
    if job.after and job.state not in FINISHED:
        click.echo(waits_for_line(app.store.waiting_for(job.id)))
    click.echo()
    click.echo(render.runs_table(runs) if runs else "No runs yet.")


def _run_pid(app: App, job) -> Optional[int]:
    """The PID (and process group) of the job's run, when it is processing on this host."""
    if job.state != PROCESSING:
        return None
    from ..pidfile import live_workers, run_pids

    lease = app.settings()["lease_seconds"]
    holder = [w for w in live_workers(app.store, lease, app.home.root) if w.worker_id == job.worker_id]
    return run_pids(holder).get(job.worker_id)


def waits_for_line(unfinished: list) -> str:
    if not unfinished:
        return "waits for: nothing (every job it waits for has completed)"
    return "waits for: " + ", ".join(f"{job_id} ({state or 'deleted'})" for job_id, state in unfinished)


@cli.command()
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends; exit as wait does.")
@click.option("-n", "--tail", type=click.IntRange(0, MAX_PAGE), metavar="N", help="Only the last N lines.")
@click.option("--timeout", metavar="S", help="With --follow: give up after S seconds (exit 124).")
@pass_app
def logs(app: App, job_id: str, follow: bool, tail: Optional[int], timeout: Optional[str]) -> None:
    """Print a job's output (every run, each under a header line).

    With --follow it exits as wait does: 0 if the job completed, 1 if it died, 124 on --timeout.

    \b
    Examples:
      queuectl logs job1 --tail 20
      queuectl logs job1 --follow
    """
    from ..watch import print_log

    if timeout is not None and not follow:
        raise BadInput("--timeout applies to --follow only")
    limit = None if timeout is None else parse_duration(timeout, "timeout")
    full_id = app.resolve_ids((job_id,))[0]
    notice = _worker_notice(app) if follow else None
    sys.exit(print_log(app.store, full_id, app.home.log_path(full_id), follow, tail, limit, notice))


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every job not yet finished: pending, processing, failed.")
@click.option("--timeout", metavar="S", help="Give up after S seconds (exit 124).")
@pass_app
def wait(app: App, job_ids: tuple, every: bool, timeout: Optional[str]) -> None:
    """Block until each job is completed or dead: exit 0 if all completed, 1 otherwise, 124 on timeout.

    \b
    Examples:
      queuectl wait job1 job2 --timeout 60
      queuectl wait --all
    """
    from ..watch import wait_for

    if every == bool(job_ids):
        raise BadInput("give job ids or --all (not both)")
    limit = None if timeout is None else parse_duration(timeout, "timeout")
    ids = _unfinished_ids(app) if every else app.resolve_ids(job_ids)
    with render.progress(len(ids), WAIT_PROGRESS_MIN, "finished") as update:
        code, message = wait_for(app.store, ids, limit, _worker_notice(app, update is not None), update)
    if message:
        render.message(message)
    sys.exit(code)


def _unfinished_ids(app: App) -> list:
    return [job.id for state in (PENDING, PROCESSING, FAILED) for job in app.store.list_jobs(state, None)]


def _worker_notice(app: App, below_a_bar: bool = False):
    """Tells, once, a `wait` or `logs -f` that no live worker of this home could run the job."""
    from ..pidfile import live_workers
    from ..watch import WorkerNotice

    lease = app.settings()["lease_seconds"]
    return WorkerNotice(lambda: len(live_workers(app.store, lease, app.home.root)), below_a_bar)


# -- removing ----------------------------------------------------------------------------------

@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@pass_app
def delete(app: App, job_ids: tuple) -> None:
    """Remove jobs (and their logs) that are not processing and that no unfinished job waits
    for (unless it is named too); all or none.

    \b
    Example:
      queuectl delete job1 job2
    """
    ids = app.resolve_ids(job_ids)
    app.store.delete(ids)
    remove_logs(app, ids)
    click.echo(f"Deleted {render.plural(len(ids), 'job')}")


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@pass_app
def requeue(app: App, job_ids: tuple) -> None:
    """Run completed or dead jobs again: back to pending, attempts 0, due now; the jobs that
    died because one of them was dead wait for it again.

    \b
    Example:
      queuectl requeue build
    """
    ids = app.resolve_ids(job_ids)
    report_moved(len(ids), app.store.requeue(ids, app.store.clock()))


def report_moved(given: int, moved: list) -> None:
    chained = len(moved) - given
    click.echo(f"Moved {render.plural(given, 'job')} back to pending"
               + (f", and {chained} that wait for them" if chained > 0 else ""))


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
    cutoff = None if older_than is None else app.store.clock() - parse_duration(older_than, "--older-than")
    if not yes:
        # The question names a count, so delete no more than it: only what had finished by now.
        cutoff = app.store.clock() if cutoff is None else cutoff
        count = app.store.count_finished(state, cutoff)
        age = f" older than {older_than}" if older_than else ""
        if count:
            confirm(f"Delete {render.plural(count, state + ' job')}{age}?", yes)
    ids = app.store.purge(state, cutoff)
    remove_logs(app, ids)
    click.echo(f"Purged {render.plural(len(ids), state + ' job')}")


def remove_logs(app: App, ids: list) -> None:
    with render.progress(len(ids), PURGE_PROGRESS_MIN, "logs removed") as update:
        for number, job_id in enumerate(ids, 1):
            try:
                os.unlink(app.home.log_path(job_id))
            except FileNotFoundError:
                pass
            if update is not None and number % 100 == 0:
                update(100)
        if update is not None:
            update(len(ids) % 100)


# -- cancelling --------------------------------------------------------------------------------

@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", metavar="S", default="10", show_default=True,
              help="Wait at most S seconds for running jobs to stop (exit 1 if one has not).")
@pass_app
def cancel(app: App, job_ids: tuple, timeout: str) -> None:
    """Cancel jobs, all or none: waiting ones go to the DLQ, running ones are stopped by their worker.

    A running job's whole process group gets SIGTERM, then SIGKILL after a grace period; the
    job becomes dead with last_error "cancelled" and the stopped run counts as an attempt.
    Completed and dead jobs cannot be cancelled.

    \b
    Examples:
      queuectl cancel job1 job2
      queuectl cancel nightly --timeout 30
    """
    from ..watch import wait_while_processing

    limit = parse_duration(timeout, "--timeout")
    ids = app.resolve_ids(job_ids)
    running = app.store.cancel(ids, app.store.clock())
    states = wait_while_processing(app.store, running, limit) if running else {}
    _refuse_unstopped(ids, running, states, limit)
    click.echo(f"Cancelled {render.plural(len(ids), 'job')}")


def _refuse_unstopped(ids: list, running: list, states: dict, limit: float) -> None:
    """Exit 1 naming the running jobs that are not dead by now (the others stay cancelled)."""
    others = ""
    stuck = [job_id for job_id in running if states.get(job_id) == PROCESSING]
    done = [job_id for job_id in running if states.get(job_id) == COMPLETED]
    cancelled = len(ids) - len(stuck) - len(done)
    if cancelled:
        others = f"; the other {render.plural(cancelled, 'job')} cancelled"
    if stuck:
        raise QueuectlError(f"still processing after {human_seconds(limit)}: {', '.join(stuck)};"
                            f" the cancel request stays, and their worker stops them when it can{others}")
    if done:
        raise Conflict(f"completed before the run could be stopped: {', '.join(done)}{others}")
