"""Code and docs agree: every command has help and is in the README; config.json holds the defaults."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from queuectl import config
from queuectl.cli import cli as cli_group

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple = ()):
    """(path, command) for every command and subcommand, e.g. (("dlq", "retry"), <Command>)."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


COMMANDS = list(_commands(cli_group))
LEAVES = [(path, command) for path, command in COMMANDS if not isinstance(command, click.Group)]


def _name(path) -> str:
    return " ".join(path)


def test_the_command_list_is_complete():
    assert {_name(path) for path, _ in COMMANDS} >= {
        "enqueue", "list", "show", "logs", "wait", "status", "delete", "purge",
        "worker", "worker start", "worker stop", "worker status",
        "dlq", "dlq list", "dlq retry", "dlq purge",
        "config", "config get", "config set", "config reset",
        "requeue", "queues", "queue", "queue limit", "pause", "resume",
    }


@pytest.mark.parametrize("path, command", COMMANDS, ids=[_name(p) for p, _ in COMMANDS])
def test_every_command_has_help(path, command):
    assert command.help and command.help.strip(), f"{_name(path)} has no help text"
    result = CliRunner().invoke(cli_group, [*path, "--help"], prog_name="queuectl")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Usage: queuectl {_name(path)}")
    first_line = command.help.strip().splitlines()[0]
    assert " ".join(first_line.split()) in " ".join(result.stdout.split())  # however it is wrapped


@pytest.mark.parametrize("path, command", LEAVES, ids=[_name(p) for p, _ in LEAVES])
def test_every_command_has_an_example(path, command):
    assert re.search(rf"Examples?:\s+queuectl {re.escape(_name(path))}\b", command.help), _name(path)


@pytest.mark.parametrize("path, command", COMMANDS, ids=[_name(p) for p, _ in COMMANDS])
def test_every_option_has_help(path, command):
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"{_name(path)} {param.opts[0]} has no help text"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[_name(p) for p, _ in COMMANDS])
def test_every_command_is_in_the_readme(path):
    assert re.search(rf"(`|queuectl ){re.escape(_name(path))}\b", README), f"{_name(path)} is not in README.md"


def test_the_global_help_lists_every_command():
    result = CliRunner().invoke(cli_group, ["--help"])
    assert result.exit_code == 0
    for name in cli_group.commands:
        assert re.search(rf"^\s+{name}\s", result.stdout, re.M), name


@pytest.mark.parametrize("name", list(config.SETTINGS))
def test_every_setting_and_alias_is_in_the_readme(name):
    setting = config.SETTINGS[name]
    default = re.escape(config.format_value(setting.default))
    row = re.search(rf"^\| `{name}`[^|]*\| {default} \|.*$", README, re.M)
    assert row, f"{name} with its default is not in the README's configuration table"
    for alias in setting.aliases:
        assert f"`{alias}`" in row.group(0)


def test_the_top_level_config_json_equals_the_defaults():
    with open(ROOT / "config.json", encoding="utf-8") as handle:
        shipped = json.load(handle)
    assert list(shipped) == list(config.DEFAULTS)
    assert {k: (type(v), v) for k, v in shipped.items()} == {k: (type(v), v) for k, v in config.DEFAULTS.items()}


@pytest.mark.timeout(90)
def test_the_readme_demo_runs_to_the_end(tmp_path):
    """scripts/demo.sh, as the README's first command runs it: real CLI, real pool (--burst)."""
    import os
    import subprocess
    import sys

    bin_dir = os.path.dirname(sys.executable)  # the venv's, where the `queuectl` script is
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    env.pop("QUEUECTL_HOME", None)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "urgent\nhello\nlater\n" in out  # priority first, the delayed job last, all three run
    status = out[out.rindex("$ queuectl status"):out.rindex("$ queuectl dlq list")]
    assert re.search(r"completed\s+3\b", status) and re.search(r"dead\s+1\b", status), status
    assert re.search(r"^flaky\s+3\s+3\s", out[out.rindex("$ queuectl dlq list"):], re.M), out
