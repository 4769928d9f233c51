"""The Click group, what every command shares (App), and the one error funnel.

Commands live in one module per noun beside this one; each translates and renders: no SQL,
no subprocess.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from .. import config, jobspec
from ..errors import QueuectlError
from ..home import QueueHome, resolve

DEFAULT_PAGE = 50
MAX_PAGE = 2**63 - 1  # SQLite's largest integer; 0 means no limit
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # Click >= 8.2


class QueuectlGroup(click.Group):
    """The one error funnel: every failure becomes a single `Error:` line and its exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from ..store import DB_ERRORS

        try:
            code = super().main(args, prog_name or "queuectl", complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # `queuectl` or `queuectl dlq` alone: the help, as click shows it
            click.echo(exc.ctx.get_help(), err=True)
            code = 2
        except click.NoSuchOption as exc:
            code = _fail(_home_hint(exc) or exc.format_message(), 2)
        except click.UsageError as exc:
            code = _fail(exc.format_message(), 2)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except QueuectlError as exc:
            code = _fail(str(exc), exc.exit_code)
        except DB_ERRORS as exc:
            code = _fail(f"database error: {exc}", 1)
        except (click.Abort, KeyboardInterrupt):
            code = _fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`queuectl list | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 0
        except OSError as exc:
            code = _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
        except Exception as exc:  # a bug of ours: still one line, never a traceback for the user
            if os.environ.get("QUEUECTL_DEBUG"):
                raise
            code = _fail(f"internal error: {type(exc).__name__}: {exc} "
                         "(set QUEUECTL_DEBUG=1 to see where, and please report it)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _home_hint(exc: click.NoSuchOption) -> str:
    """`queuectl status --home x`: --home is the group's option, so it goes before the command."""
    if exc.option_name != "--home" or exc.ctx is None:
        return ""
    command = exc.ctx.command_path.partition(" ")[2] or "COMMAND"
    return f"--home goes before the command: queuectl --home DIR {command} ..."


def _fail(text: str, code: int) -> int:
    from ..render import printable  # an error may quote what was typed: a path, a file's name

    first = text.strip().splitlines()[0] if text.strip() else "failed"
    click.echo(f"Error: {printable(first)}", err=True)
    return code


class App:
    """What every command shares: the queue home, its settings and its store, opened lazily."""

    def __init__(self, home_option: Optional[str], db_option: Optional[str] = None) -> None:
        from ..store import resolve_url

        self._root = resolve(home_option)
        self._db_url = resolve_url(db_option, os.environ)
        self._home: Optional[QueueHome] = None
        self._store = None

    @property
    def home(self) -> QueueHome:
        if self._home is None:
            self._home = QueueHome(self._root, self._db_url).ensure()
        return self._home

    @property
    def home_as_is(self) -> QueueHome:
        """The queue home, not created if it is missing: for commands that only look."""
        return QueueHome(self._root, self._db_url)

    @property
    def store(self):
        if self._store is None:
            self._store = self.home.open_store()
        return self._store

    def close_store_after(self, use) -> None:
        """Use the store, then close it: a connection must never be inherited across fork."""
        try:
            use(self.store)
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def settings(self) -> dict:
        return config.load(self.settings_source())

    def settings_source(self):
        """Where `config` reads and writes: config.json, or the shared database."""
        return self.home.settings(lambda: self.store)

    def resolve_ids(self, tokens: tuple) -> list:
        """Full ids, each once (`delete job1 job` names one job)."""
        return list(dict.fromkeys(self.store.resolve(jobspec.validate_id(token)) for token in tokens))


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    try:
        answer = click.confirm(question, err=True)
    except click.Abort:  # end of input, or Ctrl+C
        answer = None
    if answer is None or not sys.stdin.isatty():
        click.echo(err=True)  # no terminal echoed a newline: end the prompt's line, so errors start one
    if not answer:
        raise QueuectlError("not confirmed; nothing was deleted (pass --yes to skip the question)")


@click.group(cls=QueuectlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", metavar="DIR", help="Queue home (default: $QUEUECTL_HOME, else ~/.queuectl).")
@click.option("--db", metavar="URL", help="A shared PostgreSQL database, postgresql://user@host:port/dbname"
              " (default: $QUEUECTL_DB, else the home's SQLite file).")
@click.version_option(package_name="queuectl", prog_name="queuectl")
@click.pass_context
def cli(ctx: click.Context, home: Optional[str], db: Optional[str]) -> None:
    """A local background job queue for shell commands.

    \b
    Example:
      queuectl enqueue "make backup"
      queuectl worker start --count 2 --detach
      queuectl status
    """
    ctx.obj = App(home, db)


def main() -> None:
    cli()


# Each module adds its commands to `cli` when imported.
from . import dashboard, dlq, jobs, observe, queues, settings, workers  # noqa: E402,F401
