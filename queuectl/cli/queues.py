"""Steering the named queues: queues, queue limit, pause, resume."""
from __future__ import annotations

from typing import Optional

import click

from .. import jobspec, render
from ..models import STATES
from . import App, cli, json_option, pass_app

MAX_LIMIT = 1_000_000


@cli.command()
@json_option
@pass_app
def queues(app: App, as_json: bool) -> None:
    """List every queue (those with jobs or settings): jobs per state, limit, paused or not.

    \b
    Example:
      queuectl queues --json
    """
    found = app.store.queues()
    if as_json:
        render.emit_json([queue.to_dict() for queue in found])
    elif found:
        rows = [(q.name, *(str(q.counts[s]) for s in STATES), q.limit or "-", "paused" if q.paused else "-")
                for q in found]
        click.echo(render.table(rows, ["QUEUE", *(s.upper() for s in STATES), "LIMIT", "PAUSED"]))
    else:
        render.message("No queues yet: a queue exists while it has jobs or settings.")


@cli.group()
def queue() -> None:
    """Settings of one named queue."""


@queue.command(name="limit", context_settings={"ignore_unknown_options": True})  # so -1 reaches IntRange
@click.argument("name")
@click.argument("limit", metavar="N", type=click.IntRange(0, MAX_LIMIT))
@pass_app
def queue_limit(app: App, name: str, limit: int) -> None:
    """At most N jobs of queue NAME run at once, across every pool; 0 removes the limit.

    \b
    Examples:
      queuectl queue limit downloads 2
      queuectl queue limit downloads 0
    """
    app.store.set_limit(jobspec.validate_queue(name), limit)
    click.echo(f"Queue {name}: " + (f"at most {render.plural(limit, 'job')} at once" if limit else "no limit"))


@cli.command()
@click.argument("names", metavar="[QUEUE]...", nargs=-1)
@pass_app
def pause(app: App, names: tuple) -> None:
    """Start no new run from these queues (no name: from any queue) until `resume`; runs in
    progress finish, and enqueue still works.

    \b
    Examples:
      queuectl pause downloads
      queuectl pause
    """
    chosen = _chosen(names)
    app.store.pause(chosen)
    click.echo("Paused " + (f"{_queues(chosen)}" if chosen else "every queue"))


@cli.command()
@click.argument("names", metavar="[QUEUE]...", nargs=-1)
@pass_app
def resume(app: App, names: tuple) -> None:
    """Lift the pause of these queues (no name: lift every pause). Under `pause` of every
    queue, a queue resumed by name runs despite it.

    \b
    Examples:
      queuectl resume downloads
      queuectl resume
    """
    chosen = _chosen(names)
    app.store.resume(chosen)
    click.echo("Resumed " + (f"{_queues(chosen)}" if chosen else "every queue"))


def _chosen(names: tuple) -> Optional[list]:
    """The queues named, each once, all validated before any changes; None for every queue."""
    return [jobspec.validate_queue(name) for name in dict.fromkeys(names)] or None


def _queues(names: list) -> str:
    return ("queue " if len(names) == 1 else "queues ") + ", ".join(names)


def pauses_line(pauses: dict) -> str:
    """What `status` says about pauses."""
    if pauses["all"]:
        resumed = pauses["resumed"]
        return "Paused: every queue" + (f" except {', '.join(resumed)}" if resumed else "") + "."
    if pauses["queues"]:
        return f"Paused: {', '.join(pauses['queues'])}."
    return "Nothing is paused."
