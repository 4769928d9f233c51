"""config get, set, reset: the settings of a queue home."""
from __future__ import annotations

from typing import Optional

import click

from .. import config, render
from . import App, cli, json_option, pass_app



# -- config ------------------------------------------------------------------------------------

@cli.group(name="config")
def config_group() -> None:
    """Settings of this queue home (config.json)."""


@config_group.command(name="get")
@click.argument("key", required=False)
@json_option
@pass_app
def config_get(app: App, key: Optional[str], as_json: bool) -> None:
    """Show all settings, or the bare value of one.

    \b
    Examples:
      queuectl config get
      queuectl config get max_retries
    """
    values = app.settings()
    if key is not None:
        value = values[config.canonical(key)]
        render.emit_json(value) if as_json else click.echo(config.format_value(value))
    elif as_json:
        render.emit_json(values)
    else:
        rows = [(name, config.format_value(value), config.SETTINGS[name].meaning) for name, value in values.items()]
        click.echo(render.table(rows, ["KEY", "VALUE", "MEANING"]))


@config_group.command(name="set", context_settings={"ignore_unknown_options": True})  # VALUE may be -1
@click.argument("key")
@click.argument("value")
@pass_app
def config_set(app: App, key: str, value: str) -> None:
    """Validate and store one setting; running workers pick it up.

    \b
    Example:
      queuectl config set max_retries 5
    """
    name, stored = config.set_value(app.settings_source(), key, value)
    click.echo(f"{name} = {config.format_value(stored)}")


@config_group.command(name="reset")
@click.argument("key", required=False)
@pass_app
def config_reset(app: App, key: Optional[str]) -> None:
    """Restore one setting, or all, to the default.

    \b
    Example:
      queuectl config reset backoff_base
    """
    names = config.reset(app.settings_source(), key)
    click.echo(f"Reset {', '.join(names)} to the default")
