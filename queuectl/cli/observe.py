"""Commands that look at the whole queue: status."""
from __future__ import annotations

import click

from .. import render
from . import App, cli, json_option, pass_app



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
    from ..pidfile import live_workers

    workers = live_workers(app.store, app.settings()["lease_seconds"], app.home.root)
    if as_json:
        render.emit_json({**counts, "total": sum(counts.values()), "workers": [w.to_dict() for w in workers]})
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
