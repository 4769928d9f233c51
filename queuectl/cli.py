"""Click commands: parse, make one call, render. No SQL, no subprocess."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from . import config, jobspec, render
from .errors import BadInput, QueuectlError
from .home import QueueHome, resolve
from .models import DEAD, FINISHED, STATES
from .timeutil import now, parse_duration

DEFAULT_PAGE = 50
MAX_PAGE = 2**63 - 1  # SQLite's largest integer; 0 means no limit
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # Click >= 8.2


class QueuectlGroup(click.Group):
    """The one error funnel: every failure becomes a single `Error:` line and its exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from .repository import DB_ERRORS

        try:
            code = super().main(args, prog_name or "queuectl", complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # `queuectl` or `queuectl dlq` alone: the help, as click shows it
            click.echo(exc.ctx.get_help(), err=True)
            code = 2
        except click.UsageError as exc:
            code = _fail(exc.format_message(), 2)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except QueuectlError as exc:
            code = _fail(str(exc), exc.exit_code)
        except DB_ERRORS as exc:
            code = _fail(f"database error: {exc}", 1)
        except (click.Abort, KeyboardInterrupt):
            code = _fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`queuectl list | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 0
        except OSError as exc:
            code = _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
        except Exception as exc:  # a bug of ours: still one line, never a traceback for the user
            if os.environ.get("QUEUECTL_DEBUG"):
                raise
            code = _fail(f"internal error: {type(exc).__name__}: {exc} "
                         "(set QUEUECTL_DEBUG=1 to see where, and please report it)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(text: str, code: int) -> int:
    first = text.strip().splitlines()[0] if text.strip() else "failed"
    click.echo(f"Error: {first}", err=True)
    return code


class App:
    """What every command shares: the queue home, its settings and its store, opened lazily."""

    def __init__(self, home_option: Optional[str]) -> None:
        self._root = resolve(home_option)
        self._home: Optional[QueueHome] = None
        self._store = None

    @property
    def home(self) -> QueueHome:
        if self._home is None:
            self._home = QueueHome(self._root).ensure()
        return self._home

    @property
    def store(self):
        if self._store is None:
            from .repository import Store

            self._store = Store.open(self.home.db_path)
        return self._store

    def close_store_after(self, use) -> None:
        """Use the store, then close it: a connection must never be inherited across fork."""
        try:
            use(self.store)
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def settings(self) -> dict:
        return config.load(self.home.config_path)

    def resolve_ids(self, tokens: tuple) -> list:
        """Full ids, each once (`delete job1 job` names one job)."""
        return list(dict.fromkeys(self.store.resolve(jobspec.validate_id(token)) for token in tokens))


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    try:
        answer = click.confirm(question, err=True)
    except click.Abort:  # end of input, or Ctrl+C
        answer = None
    if answer is None or not sys.stdin.isatty():
        click.echo(err=True)  # no terminal echoed a newline: end the prompt's line, so errors start one
    if not answer:
        raise QueuectlError("not confirmed; nothing was deleted (pass --yes to skip the question)")


@click.group(cls=QueuectlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", metavar="DIR", help="Queue home (default: $QUEUECTL_HOME, else ~/.queuectl).")
@click.version_option(package_name="queuectl", prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, home: Optional[str]) -> None:
    """A local background job queue for shell commands.

    \b
    Example:
      queuectl enqueue "make backup"
      queuectl worker start --count 2 --detach
      queuectl status
    """
    ctx.obj = App(home)


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
    """Show one job in full, with its log file's path.

    \b
    Example:
      queuectl show job1
    """
    job = app.store.get(app.resolve_ids((job_id,))[0])
    if as_json:
        render.emit_json(job.to_dict())
    else:
        click.echo(render.job_detail(job, app.home.log_path(job.id)))


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
    from .watch import print_log

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
    from .watch import wait_for

    limit = None if timeout is None else parse_duration(timeout, "timeout")
    ids = app.resolve_ids(job_ids)
    sys.exit(wait_for(app.store, ids, limit))


@cli.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Count the jobs in each state and list the live workers.

    \b
    Example:
      queuectl status --json
    """
    counts = app.store.counts()
    from .pidfile import live_workers

    workers = live_workers(app.store, app.settings()["lease_seconds"])
    if as_json:
        render.emit_json({**counts, "total": sum(counts.values()), "workers": [w.to_dict() for w in workers]})
        return
    click.echo(render.counts_table(counts))
    click.echo()
    if workers:
        click.echo(f"{len(workers)} live worker(s):")
        click.echo(render.workers_table(workers))
    else:
        click.echo("No live workers.")


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
    _remove_logs(app, ids)
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
    _confirm(f"Delete {state} jobs{' older than ' + older_than if older_than else ''}?", yes)
    ids = app.store.purge(state, cutoff)
    _remove_logs(app, ids)
    click.echo(f"Purged {len(ids)} {state} job(s)")


def _remove_logs(app: App, ids: list) -> None:
    for job_id in ids:
        try:
            os.unlink(app.home.log_path(job_id))
        except FileNotFoundError:
            pass


# -- dlq ---------------------------------------------------------------------------------------

@cli.group()
def dlq() -> None:
    """The dead letter queue: jobs whose retries are exhausted."""


@dlq.command(name="list")
@click.option("--limit", type=click.IntRange(0, MAX_PAGE), default=DEFAULT_PAGE, show_default=True,
              help="Jobs to show; 0 = all.")
@json_option
@pass_app
def dlq_list(app: App, limit: int, as_json: bool) -> None:
    """List dead jobs with their attempts and last error, newest first.

    \b
    Example:
      queuectl dlq list
    """
    jobs = app.store.list_jobs(DEAD, limit or None)
    total = app.store.counts()[DEAD]
    if as_json:
        render.emit_json([job.to_dict() for job in jobs])
    elif jobs:
        click.echo(render.dead_table(jobs))
    else:
        render.message("The dead letter queue is empty.")
    if total > len(jobs):
        render.message(f"... {total - len(jobs)} more; use --limit N (0 for all) to see them")


@dlq.command(name="retry")
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Retry every dead job.")
@pass_app
def dlq_retry(app: App, job_ids: tuple, every: bool) -> None:
    """Move dead jobs back to pending, attempts 0, to run now.

    \b
    Examples:
      queuectl dlq retry job1
      queuectl dlq retry --all
    """
    if every == bool(job_ids):
        raise BadInput("give job ids or --all (not both)")
    ids = app.store.requeue_dead(None if every else app.resolve_ids(job_ids), now())
    click.echo(f"Moved {len(ids)} job(s) back to pending")


@dlq.command(name="purge")
@yes_option
@pass_app
def dlq_purge(app: App, yes: bool) -> None:
    """Delete every dead job and its log.

    \b
    Example:
      queuectl dlq purge --yes
    """
    _confirm("Delete every dead job?", yes)
    ids = app.store.purge(DEAD, None)
    _remove_logs(app, ids)
    click.echo(f"Purged {len(ids)} dead job(s)")


# -- config ------------------------------------------------------------------------------------

@cli.group(name="config")
def config_group() -> None:
    """Settings of this queue home (config.json)."""


@config_group.command(name="get")
@click.argument("key", required=False)
@json_option
@pass_app
def config_get(app: App, key: Optional[str], as_json: bool) -> None:
    """Show all settings, or the bare value of one.

    \b
    Examples:
      queuectl config get
      queuectl config get max_retries
    """
    values = app.settings()
    if key is not None:
        value = values[config.canonical(key)]
        render.emit_json(value) if as_json else click.echo(config.format_value(value))
    elif as_json:
        render.emit_json(values)
    else:
        rows = [(name, config.format_value(value), config.SETTINGS[name].meaning) for name, value in values.items()]
        click.echo(render.table(rows, ["KEY", "VALUE", "MEANING"]))


@config_group.command(name="set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@click.argument("key")
@click.argument("value")
@pass_app
def config_set(app: App, key: str, value: str) -> None:
    """Validate and store one setting; running workers pick it up.

    \b
    Example:
      queuectl config set max_retries 5
    """
    name, stored = config.set_value(app.home.config_path, key, value)
    click.echo(f"{name} = {config.format_value(stored)}")


@config_group.command(name="reset")
@click.argument("key", required=False)
@pass_app
def config_reset(app: App, key: Optional[str]) -> None:
    """Restore one setting, or all, to the default.

    \b
    Example:
      queuectl config reset backoff_base
    """
    names = config.reset(app.home.config_path, key)
    click.echo(f"Reset {', '.join(names)} to the default")


# -- workers -----------------------------------------------------------------------------------

@cli.group()
def worker() -> None:
    """Start, stop and inspect worker pools."""


@worker.command(name="start")
@click.option("--count", "-n", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes in the pool.")
@click.option("--detach", "--background", "detach", is_flag=True,
              help="Return once the pool is up, printing its PIDs.")
@click.option("--burst", is_flag=True, help="Quit when no job is running, due or awaiting a retry.")
@click.option("--ready-fd", type=int, hidden=True)
@pass_app
def worker_start(app: App, count: int, detach: bool, burst: bool, ready_fd: Optional[int]) -> None:
    """Start a pool of workers; in the foreground until Ctrl+C (twice: kill the runs).

    \b
    Examples:
      queuectl worker start --count 4
      queuectl worker start --count 2 --detach
      queuectl worker start --burst
    """
    from . import supervisor

    # Report a corrupt config.json or database now, once, rather than from every worker.
    app.settings()
    app.close_store_after(lambda store: store.counts())
    if detach:
        pool_id, sup, workers = supervisor.start_detached(app.home, count, burst)
        render.message(f"Started worker pool {pool_id} in the background; "
                       f"log: {app.home.pool_log_path}; stop it with: queuectl worker stop")
        click.echo(f"supervisor {sup}")
        for pid in workers:
            click.echo(f"worker {pid}")
        return
    code = supervisor.start_foreground(app.home, count, burst, ready_fd)
    # The pool is gone and every file is closed: skip the interpreter's teardown (~30 ms of
    # freeing modules and multiprocessing's exit hooks, which would only re-check reaped workers).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@worker.command(name="stop")
@click.option("--force", is_flag=True, help="Kill the runs in progress; their jobs go back to pending.")
@click.option("--no-wait", is_flag=True, help="Return at once instead of waiting for the pools to exit.")
@click.option("--timeout", metavar="S", help="Wait at most S seconds (exit 1 if workers still run).")
@pass_app
def worker_stop(app: App, force: bool, no_wait: bool, timeout: Optional[str]) -> None:
    """Stop every pool of this queue home: each worker finishes its current run first.

    \b
    Examples:
      queuectl worker stop
      queuectl worker stop --force --timeout 10
    """
    from . import supervisor

    limit = None if timeout is None else parse_duration(timeout, "timeout")
    render.message(supervisor.stop_pools(app.home, force, not no_wait, limit))


@worker.command(name="status")
@json_option
@pass_app
def worker_status(app: App, as_json: bool) -> None:
    """List each live worker: PID, pool, current job, since when.

    \b
    Example:
      queuectl worker status
    """
    from .pidfile import live_workers

    workers = live_workers(app.store, app.settings()["lease_seconds"])
    if as_json:
        render.emit_json([w.to_dict() for w in workers])
    elif workers:
        click.echo(render.workers_table(workers))
    else:
        render.message("No live workers.")


def main() -> None:
    cli()
