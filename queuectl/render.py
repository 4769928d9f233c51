"""Output for people (tabulate tables) and for scripts (--json); data to stdout, messages to stderr."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import click

from .models import DEFAULT_QUEUE, Job
from .timeutil import short_iso


def printable(text: str) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, line
    separators, bidi overrides...) shown as its escape, `\\x1b`: text from jobs reaches a
    terminal, which would act on an escape sequence (set its title, clear the screen, hide text).
    A newline shows as `\\n`: every field shown to people is one line. Backslashes stay as
    they are, so a command reads as it was typed."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# json.dumps escapes C0 controls already; with ensure_ascii=False it would let these through raw.
_JSON_UNSAFE = {code: f"\\u{code:04x}" for code in [0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]}


def emit_json(value: object) -> None:
    import json

    # The escapes stand for the same characters: a JSON reader gets the exact text back.
    click.echo(json.dumps(value, indent=2, ensure_ascii=False).translate(_JSON_UNSAFE))


def message(text: str) -> None:
    """A note for the person at the terminal, kept out of the data on stdout."""
    click.echo(text, err=True)


def table(rows: list, headers: list) -> str:
    from tabulate import tabulate  # only the commands that draw tables pay for this import

    cells = [[printable(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="simple", disable_numparse=True)


def _clip(text: Optional[str], width: int) -> str:
    text = printable(text or "")  # first, so the width counts what is shown
    return text if len(text) <= width else text[: width - 1] + "…"


def _tries(job: Job) -> str:
    return f"{job.attempts}/{job.max_retries + 1}"


def jobs_table(jobs: list) -> str:
    rows = [
        (job.id, job.state, _tries(job), job.priority, short_iso(job.run_at), _clip(job.command, 40),
         _clip(job.last_error, 40))
        for job in jobs
    ]
    headers = ["ID", "STATE", "TRIES", "PRI", "RUN AT (UTC)", "COMMAND", "LAST ERROR"]
    if any(job.queue != DEFAULT_QUEUE for job in jobs):  # named queues in use: say which
        rows = [(*row[:2], job.queue, *row[2:]) for row, job in zip(rows, jobs)]
        headers[2:2] = ["QUEUE"]
    return table(rows, headers)


def dead_table(jobs: list) -> str:
    rows = [(job.id, job.attempts, job.exit_code if job.exit_code is not None else "-",
             short_iso(job.updated_at), _clip(job.command, 40), _clip(job.last_error, 60)) for job in jobs]
    return table(rows, ["ID", "ATTEMPTS", "EXIT", "DIED (UTC)", "COMMAND", "LAST ERROR"])


def job_detail(job: Job, log_path: str, run_pid: Optional[int] = None) -> str:
    """Every field, one a line; `pid:` (of the run, its process group too) while it runs here."""
    data = job.to_dict()
    data["attempts"] = f"{job.attempts} (up to {job.max_retries + 1} runs: max_retries {job.max_retries})"
    data["timeout"] = "none" if not job.timeout else f"{job.timeout:g}s"
    data["after"] = ", ".join(job.after) or None
    data["log"] = log_path
    fields = list(data.items())
    if run_pid is not None:
        fields.insert(3, ("pid", run_pid))  # after `state`
    width = max(len(key) for key, _ in fields) + 1
    return "\n".join(f"{key + ':':<{width}} {'-' if value is None else printable(str(value))}"
                     for key, value in fields)


def counts_table(counts: dict) -> str:
    return table([(state, str(n)) for state, n in counts.items()], ["STATE", "JOBS"])


def workers_table(workers: list, run_pids: Optional[dict] = None) -> str:
    """With `run_pids` (worker id -> PID of its run), a RUN PID column: "-" where it is not known
    here (idle, or on another host)."""
    rows = [(w.pid, w.pool_id, w.host, w.job_id or "(idle)", short_iso(w.job_since or w.started_at))
            for w in workers]
    headers = ["PID", "POOL", "HOST", "JOB", "SINCE (UTC)"]
    if run_pids is not None:
        rows = [row[:4] + (run_pids.get(w.worker_id, "-"),) + row[4:] for row, w in zip(rows, workers)]
        headers = headers[:4] + ["RUN PID"] + headers[4:]
    return table(rows, headers)


def plural(count: int, noun: str) -> str:
    """`1 job`, `2 jobs`, `0 jobs`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def some(names: list, shown: int = 10) -> str:
    """`a, b, c`, or the first `shown` names and how many more: a message stays one line."""
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


@contextmanager
def progress(total: int, minimum: int, what: str) -> Iterator[Optional[Callable[[int], None]]]:
    """A progress bar on stderr (`[####    ] 300 of 1000 finished`) that yields its update
    function, only when stderr is a terminal and there is much to do; None otherwise."""
    if total < minimum or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, file=sys.stderr, item_show_func=lambda item: item) as bar:
        def update(steps: int) -> None:
            bar.update(steps, f"{min(bar.pos + steps, total)} of {total} {what}")

        bar.current_item = f"0 of {total} {what}"
        bar.render_progress()
        yield update


clip = _clip
SHOWN_RUNS = 20  # `show` lists the last runs; `show --json` all of them


def runs_table(runs: list) -> str:
    from .stats import human

    shown = runs[-SHOWN_RUNS:]
    rows = [(run.attempt, short_iso(run.started_at), human(run.ended_at - run.started_at), run.outcome,
             "-" if run.exit_code is None else run.exit_code, _clip(run.worker, 24), _clip(run.error, 50))
            for run in shown]
    text = table(rows, ["RUN", "STARTED (UTC)", "TOOK", "OUTCOME", "EXIT", "WORKER", "ERROR"])
    if len(runs) > len(shown):
        text = f"({len(runs) - len(shown)} earlier runs not shown; `show --json` lists them all)\n" + text
    return text
