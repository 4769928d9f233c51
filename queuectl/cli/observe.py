"""Commands that look at the whole queue: status, check."""
from __future__ import annotations

import click

from .. import render
from . import App, cli, json_option, pass_app
from .queues import pauses_line



@cli.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Count the jobs in each state, list the live workers, and say what is paused.

    \b
    Example:
      queuectl status --json
    """
    counts = app.store.counts()
    from ..pidfile import live_workers

    workers = live_workers(app.store, app.settings()["lease_seconds"], app.home.root)
    pauses = app.store.pauses()
    if as_json:
        render.emit_json({**counts, "total": sum(counts.values()), "workers": [w.to_dict() for w in workers],
                          "paused": pauses})
        return
    click.echo(render.counts_table(counts))
    click.echo()
    if workers:
        click.echo(f"{render.plural(len(workers), 'live worker')}:")
        click.echo(render.workers_table(workers))
    else:
        click.echo("No live workers.")
        if counts["processing"]:
            # Their worker died: a pool takes them back (retried, or dead) as soon as it starts.
            click.echo(f"{render.plural(counts['processing'], 'processing job')} will be taken back"
                       " when a pool starts (queuectl worker start).")
    click.echo(pauses_line(pauses))


@cli.command()
@json_option
@pass_app
def check(app: App, as_json: bool) -> None:
    """Check the database's integrity, orphaned jobs and stale pidfiles; change nothing.

    Exit 0 when all is well, 1 when something was found.

    \b
    Example:
      queuectl check --json
    """
    from .. import config, health

    home = app.home_as_is
    report = health.check(home, config.load(home.config_path)["lease_seconds"])
    if as_json:
        render.emit_json(report.to_dict())
    else:
        click.echo(_check_text(report))
    if report.problems:
        raise click.exceptions.Exit(1)


def _check_text(report) -> str:
    lines = [f"database {report.database}: " + ("damaged" if report.integrity else "ok")]
    lines += [f"  {problem}" for problem in report.integrity]
    lines.append(f"processing jobs without a live worker: {len(report.orphans) or 'none'}")
    lines += [f"  {job['id']} (worker {job['worker']}): {job['reason']}" for job in report.orphans]
    lines.append(f"stale pidfiles: {len(report.stale_pidfiles) or 'none'}")
    lines += [f"  {pidfile['path']}: {pidfile['reason']}" for pidfile in report.stale_pidfiles]
    lines.append(f"{render.plural(report.problems, 'problem')} found" if report.problems else "all is well")
    return "\n".join(lines)
