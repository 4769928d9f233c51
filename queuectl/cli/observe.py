"""Commands that look at the whole queue: status, check, stats, metrics."""
from __future__ import annotations

from typing import Optional

import click

from .. import render
from ..errors import BadInput, QueuectlError
from ..jobspec import validate_queue
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
    from .. import health

    report = health.check(app.home_as_is)
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


# -- stats and metrics: run history --------------------------------------------------------------

@cli.command()
@click.option("--since", metavar="D", default="1h", show_default=True,
              help="Runs that ended in the last D (30m, 24h, 7d), or since an ISO 8601 time.")
@click.option("--queue", metavar="NAME", help="Only the runs of this queue.")
@json_option
@pass_app
def stats(app: App, since: str, queue: Optional[str], as_json: bool) -> None:
    """Runs in a window (by outcome, per minute, durations, waits, what fails most) and the queue now.

    \b
    Examples:
      queuectl stats
      queuectl stats --since 24h --json
    """
    from ..figures import stats_data, window_start
    from ..pidfile import live_workers

    moment = app.store.clock()
    queue = None if queue is None else validate_queue(queue)
    start = window_start(since, moment)
    workers = live_workers(app.store, app.settings()["lease_seconds"], app.home.root)
    data = stats_data(app.store, workers, start, moment, queue)
    if as_json:
        render.emit_json(data)
    else:
        click.echo(_stats_text(data, since))


def _stats_text(data: dict, since: str) -> str:
    from ..stats import human

    runs, now_ = data["runs"], data["now"]
    where = f" of queue {data['queue']}" if data["queue"] else ""
    lines = [f"Runs{where} that ended since {data['since']} ({since}): {runs['total']}"]
    if runs["total"]:
        lines.append("  " + ", ".join(f"{outcome} {n}" for outcome, n in sorted(
            runs["by_outcome"].items(), key=lambda item: -item[1])) + f"; {runs['per_minute']:g} per minute")
        d, w = runs["duration_seconds"], runs["wait_seconds"]
        lines.append(f"  duration  p50 {human(d['p50'])}, p95 {human(d['p95'])}, max {human(d['max'])}")
        lines.append(f"  wait      p50 {human(w['p50'])}, p95 {human(w['p95'])} (from due to start)")
    if runs["top_failed_commands"]:
        lines.append("Most failed runs:")
        lines += [f"  {item['failed_runs']:>6}  {render.clip(item['command'], 70)}"
                  for item in runs["top_failed_commands"]]
    jobs = ", ".join(f"{state} {n}" for state, n in now_["jobs"].items())
    oldest = now_["oldest_due_seconds"]
    lines.append(f"Now: {jobs}")
    lines.append(f"  oldest due job waiting {human(oldest) if oldest is not None else '-'}; "
                 f"{render.plural(now_['workers'], 'live worker')}")
    return "\n".join(lines)


@cli.command()
@click.option("--output", metavar="FILE", help="Write to FILE atomically (for node_exporter's textfile collector).")
@pass_app
def metrics(app: App, output: Optional[str]) -> None:
    """Print Prometheus metrics (text format 0.0.4): jobs, runs, durations, oldest due job, workers.

    \b
    Examples:
      queuectl metrics
      queuectl metrics --output /var/lib/node_exporter/textfile/queuectl.prom
    """
    from ..figures import metrics_text
    from ..pidfile import live_workers

    workers = live_workers(app.store, app.settings()["lease_seconds"], app.home.root)
    text = metrics_text(app.store, workers, app.store.clock())
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_atomically(output, text)


def _write_atomically(path: str, text: str) -> None:
    """A temporary file beside `path`, then rename: readers see the old file or the new one.
    The temporary name does not end in .prom, so the textfile collector never reads it half-written."""
    import os
    import tempfile

    if not path or path.endswith(os.sep) or os.path.isdir(path):
        raise BadInput(f"invalid --output {path!r}: give a file name, e.g. /var/lib/node_exporter/textfile/queuectl.prom")
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise QueuectlError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o644)  # node_exporter runs as another user; the figures hold no job text
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
