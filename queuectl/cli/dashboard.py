"""The dashboard command: a live web page and JSON API for the queue."""
from __future__ import annotations

import os
from typing import Optional

import click

from .. import render
from . import App, cli, pass_app


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--read-only", is_flag=True, help="Show the queue, refuse every action.")
@click.option("--token", metavar="T",
              help="Every request must carry it (default: $QUEUECTL_DASHBOARD_TOKEN).")
@pass_app
def dashboard(app: App, host: str, port: int, read_only: bool, token: Optional[str]) -> None:
    """Serve a live web page of the queue, with a JSON API, until interrupted.

    \b
    Examples:
      queuectl dashboard
      queuectl dashboard --read-only --port 9000
      QUEUECTL_DASHBOARD_TOKEN=s3cret queuectl dashboard --host 0.0.0.0
    """
    from ..web import server

    token = token if token is not None else (os.environ.get(server.TOKEN_ENV) or None)
    server.check_bind(host, token)
    app.close_store_after(lambda store: None)  # create and migrate the database before serving
    if not server.is_loopback(host):
        render.message(f"Warning: {host} is reachable from other machines, over plain HTTP; "
                       "every request needs the token")
    options = server.Options(app.home, host, port, read_only, token, server.new_csrf_token())
    server.serve(options, click.echo)
