"""Commands that look at the whole queue: status, stats, metrics."""
from __future__ import annotations

from typing import Optional

import click

from .. import render
from ..errors import BadInput, QueuectlError
from ..timeutil import iso, now
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
        click.echo(f"{len(workers)} live worker(s):")
        click.echo(render.workers_table(workers))
    else:
        click.echo("No live workers.")


# -- stats and metrics: run history --------------------------------------------------------------

_QUEUE_NAME = r"[A-Za-z0-9_:@][A-Za-z0-9_.:@-]{0,63}"


def _queue_option(value: Optional[str]) -> Optional[str]:
    import re

    if value is not None and not re.fullmatch(_QUEUE_NAME, value):
        raise BadInput(f"invalid queue name {value!r}: 1-64 of A-Z a-z 0-9 _ . - : @, "
                       "not starting with . or -")
    return value


def _window_start(since: str, moment: float) -> float:
    """`--since`: a duration back from now (30m, 24h, 7d) or an ISO 8601 time."""
    from ..repository import RETENTION_MINUTES
    from ..timeutil import parse_duration, parse_iso

    try:
        start = moment - parse_duration(since, "--since")
    except BadInput:
        if not any(c in since for c in "-:T"):
            raise
        start = parse_iso(since, "--since")
    if start >= moment:
        raise BadInput(f"invalid --since {since!r}: the window must start in the past")
    if moment - start > RETENTION_MINUTES * 60 + 60:
        raise BadInput(f"invalid --since {since!r}: run statistics are kept for "
                       f"{RETENTION_MINUTES // 1440} days (use 31d or less)")
    return start


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
    from .. import stats as figures
    from ..pidfile import live_workers

    moment = now()
    queue = _queue_option(queue)
    start = _window_start(since, moment)
    store = app.store
    summary = figures.summary(store.run_window(start, queue), (moment - start) / 60)
    summary["top_failed_commands"] = [{"command": command, "failed_runs": n}
                                      for command, n in store.failing_commands(start, queue)]
    workers = live_workers(store, app.settings()["lease_seconds"], app.home.root)
    oldest = store.oldest_due(moment)
    data = {"since": iso(start), "until": iso(moment), "queue": queue, "runs": summary,
            "now": {"jobs": store.counts(), "oldest_due_seconds": None if oldest is None else round(oldest, 3),
                    "workers": len(workers)}}
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
                 f"{now_['workers']} live worker(s)")
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
    from .. import metrics as exposition
    from ..pidfile import live_workers

    store, moment = app.store, now()
    workers = live_workers(store, app.settings()["lease_seconds"], app.home.root)
    oldest = store.oldest_due(moment)
    text = exposition.render(exposition.Figures(
        jobs={"default": store.counts()}, runs=store.run_totals(),
        oldest_due={"default": round(oldest or 0.0, 3)}, workers=len(workers),
        paused=store.paused_queues()))
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
