"""Configuration keys, defaults, aliases and validation; load and save of the settings: the
home's config.json, or the PostgreSQL database (config.FileSettings and the store share a form)."""
from __future__ import annotations

import math
import os
import time
from typing import NamedTuple

from .errors import BadInput, StoreError


class Setting(NamedTuple):
    name: str
    default: float
    integer: bool
    minimum: float
    maximum: float
    meaning: str
    aliases: tuple = ()
    seconds: bool = False  # `config set` takes a duration too: `1h`, `1h30m`


SETTINGS = {
    s.name: s
    for s in (
        Setting("max_retries", 3, True, 0, 1_000_000, "default retries for new jobs",
                ("max_retries_default", "default_max_retries")),
        Setting("backoff_base", 2, False, 1, 1_000, "base of the exponential backoff"),
        Setting("backoff_max", 3600, False, 0, 31_536_000, "cap on one backoff delay, seconds",
                seconds=True),
        Setting("timeout_seconds", 0, False, 0, 31_536_000, "default run timeout, 0 = none",
                ("timeout", "job_timeout"), seconds=True),
        Setting("poll_interval", 1.0, False, 0.05, 3600,
                "longest an idle worker sleeps between looks, seconds", seconds=True),
        Setting("lease_seconds", 30, False, 1, 86_400, "how soon a dead worker's job is taken back",
                seconds=True),
    )
}
DEFAULTS = {name: s.default for name, s in SETTINGS.items()}
_ALIASES = {alias: s.name for s in SETTINGS.values() for alias in (s.name, *s.aliases)}


def canonical(key: str) -> str:
    """The setting's name for a key or alias; hyphens and underscores are interchangeable."""
    name = _ALIASES.get(key.strip().lower().replace("-", "_"))
    if name is None:
        raise BadInput(f"unknown config key {key!r}; valid keys: {', '.join(SETTINGS)}")
    return name


def validate(name: str, value: object) -> float:
    """The value if it suits the setting, else BadInput saying what is valid."""
    setting = SETTINGS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"invalid value {value!r}: {_wanted(setting)}")
    if setting.integer and not (isinstance(value, int) or float(value).is_integer()):
        raise BadInput(f"invalid value {value!r}: {_wanted(setting)}")
    if not math.isfinite(value) or not setting.minimum <= value <= setting.maximum:
        raise BadInput(f"invalid value {value!r}: {_wanted(setting)}")
    return int(value) if setting.integer else value


def _wanted(setting: Setting) -> str:
    kind = "a whole number" if setting.integer else "a number"
    return f"{setting.name} must be {kind} from {_plain(setting.minimum)} to {_plain(setting.maximum)}"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def parse_value(name: str, text: str) -> float:
    """A setting's value from the command line's text; settings in seconds take durations
    as `enqueue --delay` does (`1h`, `1h30m`)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = _duration(name, text)
    setting = SETTINGS[name]
    try:
        return validate(name, value)
    except BadInput:
        if not setting.seconds:
            raise
        raise BadInput(f"invalid value {text!r}: {_wanted(setting)} seconds,"
                       " or a duration such as 90s, 5m, 1h30m, 1d") from None


def _duration(name: str, text: str) -> object:
    if not SETTINGS[name].seconds:
        return text
    from .timeutil import parse_duration

    try:
        seconds = parse_duration(text, name)
    except BadInput:
        return text  # refused by validate, which says what is valid
    return int(seconds) if seconds.is_integer() else seconds


def format_value(value: float) -> str:
    """How `config get KEY` prints a value: `3`, `1.0`."""
    return repr(value)


class FileSettings:
    """The settings of a queue home kept in its config.json (the SQLite backend's; a PostgreSQL
    store keeps them in its database and offers the same three methods)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read_settings(self):
        """The stored object as it is (None when there is none yet); a corrupt file is an error."""
        import json  # lazily, like every import only some commands need: start-up time is a feature

        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise _corrupt(self.path, str(exc)) from None

    def write_settings(self, values: dict) -> None:
        """Write atomically (temp file + rename), mode 0600."""
        import json

        temp = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(values, handle, indent=2)
                handle.write("\n")
            os.replace(temp, self.path)
        except OSError as exc:
            raise StoreError(f"cannot write config file {self.path}: {exc.strerror}") from None

    def settings_stamp(self) -> object:
        """Changes when the settings may have: a stat, no read."""
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)


def _source(where):
    return FileSettings(where) if isinstance(where, str) else where


def load(where) -> dict:
    """Defaults overlaid with the stored settings (`where`: a config.json path, or a settings
    source such as a PostgreSQL store); corrupt settings are an error naming where they are."""
    source = _source(where)
    values = dict(DEFAULTS)
    stored = source.read_settings()
    name = getattr(source, "path", "settings")
    if stored is None:
        return values
    if not isinstance(stored, dict):
        raise _corrupt(name, "expected a JSON object")
    for key, value in stored.items():
        try:
            values[canonical(key)] = validate(canonical(key), value)
        except BadInput as exc:
            raise _corrupt(name, str(exc)) from None
    return values


def _corrupt(path: str, why: str) -> StoreError:
    return StoreError(f"corrupt config file {path}: {why} "
                      "(fix it, or run `queuectl config reset` to restore every default)")


def save(where, values: dict) -> None:
    _source(where).write_settings(values)


def set_value(where, key: str, text: str) -> tuple:
    """Validate and store one setting; returns (name, value)."""
    name = canonical(key)
    value = parse_value(name, text)
    values = load(where)
    values[name] = value
    save(where, values)
    return name, value


def reset(where, key: str | None = None) -> list:
    """Restore one setting, or all, to the defaults; returns the names reset."""
    if key is None:
        save(where, dict(DEFAULTS))
        return list(SETTINGS)
    name = canonical(key)
    values = load(where)
    values[name] = DEFAULTS[name]
    save(where, values)
    return [name]


class LiveConfig:
    """The settings as a running worker sees them: re-read when they change."""

    RECHECK_SECONDS = 0.25  # a stat per job is measurable in the drain benchmark; this is not

    def __init__(self, where) -> None:
        self.source = _source(where)
        self._stamp: object = None
        self._values = dict(DEFAULTS)
        self._checked = float("-inf")

    def current(self) -> dict:
        moment = time.monotonic()
        if moment - self._checked < self.RECHECK_SECONDS:
            return self._values
        self._checked = moment
        try:
            stamp = self.source.settings_stamp()
        except StoreError:
            return self._values  # the database is unreachable: keep the last settings
        if stamp != self._stamp:
            try:
                self._values = load(self.source)
            except StoreError:
                pass  # keep the last good settings while someone edits the file by hand
            self._stamp = stamp
        return self._values
