"""worker start, stop, status: the pools of a queue home."""
from __future__ import annotations

import os
import re
import sys
from typing import Optional

import click

from .. import render
from ..errors import BadInput, QueuectlError
from ..timeutil import parse_duration
from . import App, cli, json_option, pass_app

POOL_ID = re.compile(r"[0-9a-f]{6}")


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
@click.option("--queue", "queues", metavar="NAME", multiple=True,
              help="Take jobs only from this queue (repeatable; default: every queue).")
@click.option("--ready-fd", type=int, hidden=True)
@pass_app
def worker_start(app: App, count: int, detach: bool, burst: bool, queues: tuple, ready_fd: Optional[int]) -> None:
    """Start a pool of workers; in the foreground until Ctrl+C (twice: kill the runs).

    \b
    Examples:
      queuectl worker start --count 4
      queuectl worker start --count 2 --detach
      queuectl worker start --burst
      queuectl worker start --queue downloads --queue mail
    """
    from .. import jobspec, supervisor
    from ..pidfile import live_pools

    served = [jobspec.validate_queue(name) for name in dict.fromkeys(queues)] or None
    # Report a corrupt config.json or database now, once, rather than from every worker.
    rows = _live_workers(app)
    if detach:
        running, _ = live_pools(app.home, rows)
        others = [pool.pool_id for pool in running]
        pool_id, sup, workers = supervisor.start_detached(app.home, count, burst, served)
        render.message(f"Started worker pool {pool_id} in the background; "
                       f"log: {app.home.pool_log_path}; stop it with: queuectl worker stop")
        if others:
            render.message(f"{render.plural(len(others), 'other pool')} already run in this queue home: "
                           f"{', '.join(others)} (stop one with: queuectl worker stop --pool ID)")
        click.echo(f"supervisor {sup}")
        for pid in workers:
            click.echo(f"worker {pid}")
        return
    code = supervisor.start_foreground(app.home, count, burst, ready_fd, served)
    # The pool is gone and every file is closed: skip the interpreter's teardown (~30 ms of
    # freeing modules and multiprocessing's exit hooks, which would only re-check reaped workers).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@worker.command(name="stop")
@click.option("--force", is_flag=True, help="Kill the runs in progress; their jobs go back to pending.")
@click.option("--no-wait", is_flag=True, help="Return at once instead of waiting for the pools to exit.")
@click.option("--timeout", metavar="S", help="Wait at most S seconds (exit 1 if workers still run).")
@click.option("--pool", "pool_id", metavar="ID", help="Stop only this pool (its id as `worker status` shows it).")
@pass_app
def worker_stop(app: App, force: bool, no_wait: bool, timeout: Optional[str], pool_id: Optional[str]) -> None:
    """Stop every pool of this queue home: each worker finishes its current run first.

    \b
    Examples:
      queuectl worker stop
      queuectl worker stop --force --timeout 10
      queuectl worker stop --pool 3f9c2a
    """
    from .. import supervisor

    limit = None if timeout is None else parse_duration(timeout, "timeout")
    if pool_id is not None and not POOL_ID.fullmatch(pool_id):
        raise BadInput(f"invalid pool id {pool_id!r}: 6 hex digits, as `queuectl worker status` shows")
    from ..store import DB_ERRORS

    home = app.home  # a home that cannot be used is an error, not a note
    try:
        rows = _live_workers(app)
    except (QueuectlError, *DB_ERRORS) as exc:  # a broken database or config.json must not keep pools running
        rows = []
        render.message(f"Note: stopping the pools of the pidfiles only; {exc}")
    render.message(supervisor.stop_pools(home, force, not no_wait, limit, rows, pool_id))


@worker.command(name="status")
@json_option
@pass_app
def worker_status(app: App, as_json: bool) -> None:
    """List each live worker: PID, pool, current job, since when.

    \b
    Example:
      queuectl worker status
    """
    from ..pidfile import run_pids

    workers = _live_workers(app)
    runs = run_pids(workers)
    if as_json:
        render.emit_json([{**w.to_dict(), "run_pid": runs.get(w.worker_id)} for w in workers])
    elif workers:
        click.echo(render.workers_table(workers, runs))
    else:
        render.message("No live workers.")


def _live_workers(app: App) -> list:
    """This home's live workers, by the workers table; the store is closed again (a pool may
    fork next)."""
    from ..pidfile import live_workers

    lease = app.settings()["lease_seconds"]
    found: list = []
    app.close_store_after(lambda store: found.extend(live_workers(store, lease, app.home.root)))
    return found
