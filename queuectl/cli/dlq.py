"""The dead letter queue: dlq list, retry, purge."""
from __future__ import annotations

import click

from .. import render
from ..errors import BadInput
from ..models import DEAD
from . import DEFAULT_PAGE, MAX_PAGE, App, cli, confirm, json_option, pass_app, yes_option
from .jobs import remove_logs, report_moved



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
    ids = None if every else app.resolve_ids(job_ids)
    moved = app.store.requeue_dead(ids, app.store.clock())
    report_moved(len(moved) if ids is None else len(ids), moved)


@dlq.command(name="purge")
@yes_option
@pass_app
def dlq_purge(app: App, yes: bool) -> None:
    """Delete every dead job and its log.

    \b
    Example:
      queuectl dlq purge --yes
    """
    cutoff = None if yes else app.store.clock()  # the question names a count: delete no more than it
    count = 0 if yes else app.store.count_finished(DEAD, cutoff)
    if count:
        confirm(f"Delete {render.plural(count, 'dead job')}?", yes)
    ids = app.store.purge(DEAD, cutoff)
    remove_logs(app, ids)
    click.echo(f"Purged {render.plural(len(ids), 'dead job')}")
