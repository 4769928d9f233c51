"""Commands that look at the whole queue: status."""
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
        click.echo(f"{len(workers)} live worker(s):")
        click.echo(render.workers_table(workers))
    else:
        click.echo("No live workers.")
    click.echo(pauses_line(pauses))
