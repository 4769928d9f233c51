"""Turning what a user typed or wrote (JSON, flags, files) into validated NewJob records."""
from __future__ import annotations

import math
import os
import re
from typing import NamedTuple, Optional

from .deps import check_batch
from .errors import BadInput
from .models import DEFAULT_QUEUE, PENDING, NewJob
from .timeutil import MAX_DURATION, parse_duration, parse_iso

ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . - : @, not starting with . or -"
_ID = re.compile(r"[A-Za-z0-9_:@][A-Za-z0-9_.:@-]{0,127}")
JOB_KEYS = ("id", "command", "queue", "after", "max_retries", "priority", "delay", "run_at", "timeout", "cwd")
QUEUE_RULE = "1-64 characters of A-Z a-z 0-9 _ . - : @, not starting with . or -"
MAX_AFTER = 1000
# Keys of the full job form, accepted only with the values a new job has, so that a job
# printed by `show --json` can be enqueued again.
INITIAL_VALUES = {"state": (PENDING,), "attempts": (0,), "exit_code": (None,), "last_error": (None,)}
ANY_VALUE = ("created_at", "updated_at")
MAX_COMMAND = 128 * 1024  # Linux refuses a longer single argument to exec (MAX_ARG_STRLEN)
MAX_PRIORITY = 1_000_000_000
MAX_RETRIES = 1_000_000
# The json module recurses once per nesting level, so `[[[[...` deep enough raises RecursionError.
JSON_ERRORS = (ValueError, RecursionError)


class Defaults(NamedTuple):
    """What a job gets for the fields it leaves out."""

    max_retries: int
    timeout: Optional[float]
    cwd: str
    now: float


def validate_id(value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise BadInput(f"invalid job id {shown!r}: use {ID_RULE}")
    return value


def validate_queue(value: object) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _ID.fullmatch(value):
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise BadInput(f"invalid queue name {shown!r}: use {QUEUE_RULE}")
    return value


def _after(value: object, job_id: Optional[str]) -> tuple:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise BadInput(f"invalid after {value!r}: must be a list of job ids")
    if len(value) > MAX_AFTER:
        raise BadInput(f"a job can wait for at most {MAX_AFTER} jobs")
    after = tuple(dict.fromkeys(validate_id(item) for item in value))
    if job_id is not None and job_id in after:
        raise BadInput(f"job {job_id} waits for itself")
    return after


def _whole(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"invalid {name} {value!r}: must be a whole number from {low} to {high}")
    return value


def _command(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"invalid command {value!r}: must be a non-empty string")
    if "\0" in value:
        raise BadInput("invalid command: it contains a NUL character")
    if not value.isascii():
        _utf8(value, "command")
    if len(value) * 4 > MAX_COMMAND and len(value.encode("utf-8", "surrogateescape")) > MAX_COMMAND:
        raise BadInput("command is longer than 128 KiB; put it in a script and enqueue that")
    return value


def _utf8(value: str, name: str) -> None:
    """Refuse text the store cannot hold: bytes that were not UTF-8 in argv arrive as lone
    surrogates (Python's surrogateescape), as does a lone `\\ud800` escape in JSON."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"invalid {name} {value!r}: it is not valid UTF-8 text") from None


def _timeout(value: object) -> Optional[float]:
    if value is None:
        return None
    seconds = parse_duration(value, "timeout")
    if seconds > 365 * 86400:
        raise BadInput(f"invalid timeout {value!r}: at most one year")
    return int(seconds) if float(seconds).is_integer() else seconds


def _cwd(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"invalid cwd {value!r}: must be a directory path")
    _utf8(value, "cwd")
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        raise BadInput(f"invalid cwd {value!r}: no such directory")
    return path


def _run_at(fields: dict, now: float) -> float:
    if fields.get("delay") is not None and fields.get("run_at") is not None:
        raise BadInput("give either delay or run_at, not both")
    if fields.get("run_at") is not None:
        moment = parse_iso(fields["run_at"], "run_at")
        if abs(moment - now) > MAX_DURATION:
            raise BadInput(f"invalid run_at {fields['run_at']!r}: too far from now")
        return moment
    if fields.get("delay") is not None:
        return now + parse_duration(fields["delay"], "delay")
    return now


def check_keys(obj: dict) -> None:
    """Refuse keys a new job cannot have, and full-form keys with non-initial values."""
    for key, value in obj.items():
        if key in JOB_KEYS or key in ANY_VALUE:
            continue
        if key in INITIAL_VALUES:
            if value not in INITIAL_VALUES[key] or isinstance(value, bool):
                allowed = {PENDING: '"pending"', 0: "0", None: "null"}[INITIAL_VALUES[key][0]]
                raise BadInput(f"{key} {value!r} is not accepted: a new job has {key} {allowed}")
            continue
        raise BadInput(f"unknown key {key!r}; valid keys: {', '.join(JOB_KEYS)}")


def build(fields: dict, defaults: Defaults) -> NewJob:
    """A NewJob from merged JSON fields and flags; raises BadInput naming the bad field.

    Only the fields given are validated (defaults are valid already): `enqueue --file` calls
    this once per line, so its cost is most of bulk enqueue's.
    """
    if not fields.keys() <= _PLAIN_KEYS:
        check_keys(fields)
    command = fields.get("command")
    if command is None:
        raise BadInput("no command given: pass it as JOB, --cmd, --command-file or in the JSON")
    job_id = fields.get("id")
    max_retries = fields.get("max_retries")
    priority = fields.get("priority")
    cwd = fields.get("cwd")
    queue = fields.get("queue")
    after = fields.get("after")
    job_id = None if job_id is None else validate_id(job_id)
    return NewJob(
        job_id,
        _command(command),
        defaults.max_retries if max_retries is None else _whole(max_retries, "max_retries", 0, MAX_RETRIES),
        0 if priority is None else _whole(priority, "priority", -MAX_PRIORITY, MAX_PRIORITY),
        _timeout(fields["timeout"]) if "timeout" in fields else defaults.timeout,
        defaults.now if fields.get("delay") is None and fields.get("run_at") is None
        else _run_at(fields, defaults.now),
        defaults.cwd if cwd is None else _cwd(cwd),
        DEFAULT_QUEUE if queue is None else validate_queue(queue),
        () if after is None else _after(after, job_id),
    )


_PLAIN_KEYS = frozenset(JOB_KEYS)


def looks_like_json(text: str) -> bool:
    """Whether a positional JOB is meant as JSON rather than as a shell command.

    `{` always starts JSON (use --cmd for a shell group command). `[` and `"` start JSON only
    when the text parses, since `[ -f x ] && ...` is a shell test; a bare number is refused too.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return True
    if stripped[:1] in '["' or stripped[:1].isdigit() or stripped[:1] in "-.":
        import json  # lazily: a plain command never needs it

        try:
            json.loads(stripped)
        except RecursionError:  # `[[[[...` nested beyond the parser: JSON, refused as such
            return True
        except ValueError:
            return False
        return True
    return False


def parse_object(text: str, where: str = "JOB") -> dict:
    """One JSON object, or BadInput saying what was wrong with it."""
    import json

    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except JSON_ERRORS as exc:
        raise BadInput(f"malformed JSON in {where}: {_why(exc)}") from None
    if not isinstance(value, dict):
        hint = " (use --file to enqueue many jobs)" if isinstance(value, list) else ""
        raise BadInput(f"{where} must be a JSON object, not {_json_kind(value)}{hint}")
    return value


class Entries(NamedTuple):
    """Job objects read from one file, each with its line or item number. The label naming an
    entry in errors is only built for a bad one: a string per line was 5% of bulk enqueue."""

    label: str  # "jobs.jsonl line {}"
    numbered: list  # [(number, object), ...]

    def where(self, number: int) -> str:
        return self.label.format(number)


def parse_many(text: str, source: str) -> Entries:
    """Job objects from JSON Lines or a JSON array; a bad entry is named by its line or item."""
    import json

    decode = json.JSONDecoder(parse_constant=_refuse_constant).decode  # one decoder for every line
    if text.lstrip().startswith("["):
        try:
            items = decode(text)
        except JSON_ERRORS as exc:
            raise BadInput(f"malformed JSON in {source}: {_why(exc)}") from None
        if not isinstance(items, list):
            raise BadInput(f"{source} must hold JSON Lines or a JSON array of job objects")
        entries = Entries(source.replace("{", "{{").replace("}", "}}") + " item {}", list(enumerate(items, 1)))
    else:
        entries = _parse_lines(text, source, decode)
    for number, item in entries.numbered:
        if type(item) is not dict:
            raise BadInput(f"{entries.where(number)} must be a JSON object, not {_json_kind(item)}")
    return entries


def _parse_lines(text: str, source: str, decode) -> Entries:
    """JSON Lines, numbered by line. All lines are parsed in one call (C speed) when they are
    well formed; otherwise line by line, to name the first bad one."""
    # Only "\n" ends a line: str.splitlines() would also split at U+2028 and the like, which
    # JSON allows inside strings.
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line and not line.isspace()]
    values = _parse_joined([line for _, line in numbered])
    if values is None:
        values = []
        for number, line in numbered:
            try:
                values.append(decode(line))
            except JSON_ERRORS as exc:
                raise BadInput(f"malformed JSON at {source} line {number}: {_why(exc)}") from None
    label = source.replace("{", "{{").replace("}", "}}") + " line {}"
    return Entries(label, [(n, value) for (n, _), value in zip(numbered, values)])


_MARK = object()


def _parse_joined(lines: list) -> Optional[list]:
    """Each line's value, parsed in one call; None unless every line holds exactly one value.

    The lines are joined with a `NaN` between each two, which the decoder hands to `mark`. A
    value spanning lines (`{"a":[1` then `2]}`) would swallow a mark, and a line holding two
    values would shift them, so the marks must sit exactly between the lines' values. Lines
    holding constants of their own (not JSON) are left to the line-by-line parse.
    """
    import json

    if not lines:
        return []
    marks: list = []

    def mark(name: str) -> object:
        marks.append(name)
        return _MARK

    try:
        values = json.JSONDecoder(parse_constant=mark).decode("[" + ",NaN,".join(lines) + "]")
    except JSON_ERRORS:
        return None
    gaps = len(lines) - 1
    if len(values) != 2 * gaps + 1 or len(marks) != gaps or values[1::2].count(_MARK) != gaps:
        return None
    return values[::2]


def parse_commands(text: str, source: str) -> Entries:
    """One command per line, for `enqueue --lines`: blank lines and `#` comments are skipped."""
    numbered = []
    for number, line in enumerate(text.split("\n"), 1):
        command = line.strip()
        if command and not command.startswith("#"):
            numbered.append((number, {"command": command}))
    return Entries(source.replace("{", "{{").replace("}", "}}") + " line {}", numbered)


def build_many(entries: Entries, overrides: dict, defaults: Defaults) -> list:
    """NewJobs for every entry; the first bad one is named in the error."""
    jobs = []
    plain = not overrides
    make = tuple.__new__  # NewJob(...) itself runs a Python __new__: twice as slow at 100k jobs
    try:
        for number, obj in entries.numbered:
            if plain and len(obj) == 1 and "command" in obj:  # the usual JSON Lines job: a fast path
                jobs.append(make(NewJob, (None, _command(obj["command"]), defaults.max_retries, 0,
                                          defaults.timeout, defaults.now, defaults.cwd, DEFAULT_QUEUE, ())))
            else:
                jobs.append(build({**obj, **overrides} if overrides else obj, defaults))
    except BadInput as exc:
        raise BadInput(f"{entries.where(number)}: {exc}") from None
    return jobs


def _why(exc: Exception) -> str:
    return "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return "a number"
    return type(value).__name__


def read_text(path: str, option: str) -> str:
    """A file's text for an option (`-` is standard input), or BadInput naming it."""
    if path == "-":
        import sys

        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInput(f"cannot read {option} {path}: {reason}") from None


def _positional(words: tuple, command_flag: bool) -> dict:
    """The JOB words as fields: several words are one command joined with spaces, as pueue
    does (`enqueue echo hello world`); only a single word can be JSON."""
    if len(words) == 1 and looks_like_json(words[0]):
        return parse_object(words[0])
    if words[0].startswith("{") and words[0] != "{":  # `{` alone starts a shell group
        raise BadInput("JOB looks like JSON split into several words: quote the whole object "
                       """('{"command": "make"}'), or pass the command with --cmd""")
    if command_flag:
        raise BadInput("the command is given twice: as JOB and with --cmd/--command-file")
    return {"command": " ".join(words)}


def _check_sources(job: Optional[tuple], job_file: Optional[str], many_file: Optional[str],
                   lines_file: Optional[str], command: Optional[str], command_file: Optional[str]) -> None:
    """At most one source of jobs, one of the command, and one reader of standard input."""
    given = (("JOB", job), ("--job-file", job_file), ("--file", many_file), ("--lines", lines_file))
    sources = [name for name, value in given if value is not None]
    if len(sources) > 1:
        raise BadInput(f"give only one of {' and '.join(sources)}")
    if command is not None and command_file is not None:
        raise BadInput("give only one of --cmd and --command-file")
    if lines_file is not None and (command is not None or command_file is not None):
        raise BadInput("--lines takes each line as a command: it cannot be used with --cmd or --command-file")
    readers = [name for name, value in (*given[1:], ("--command-file", command_file)) if value == "-"]
    if len(readers) > 1:
        raise BadInput(f"only one option can read standard input, not {' and '.join(readers)}")


def collect(words: tuple, job_file: Optional[str], many_file: Optional[str],
            command: Optional[str], command_file: Optional[str], flags: dict,
            defaults: Defaults, lines_file: Optional[str] = None) -> list:
    """Every way `enqueue` takes jobs, reduced to NewJobs. Flags win over JSON fields.

    `words` are the JOB arguments; `lines_file` holds one command a line (`--lines`).
    """
    _check_sources(words or None, job_file, many_file, lines_file, command, command_file)
    overrides = {key: value for key, value in flags.items() if value is not None}
    if "delay" in overrides or "run_at" in overrides:
        # A time given by flag replaces the JSON's, whether that is a delay or a run_at.
        overrides = {"delay": None, "run_at": None, **overrides}
    if command_file is not None:
        overrides["command"] = read_text(command_file, "--command-file").rstrip("\n")
    elif command is not None:
        overrides["command"] = command

    if many_file is not None or lines_file is not None:
        return _collect_many(many_file, lines_file, overrides, defaults)
    if job_file is not None:
        fields = parse_object(read_text(job_file, "--job-file"), job_file)
    elif words:
        fields = _positional(words, "command" in overrides)
    else:
        fields = {}
    return [build({**fields, **overrides}, defaults)]


def _collect_many(many_file: Optional[str], lines_file: Optional[str], overrides: dict,
                  defaults: Defaults) -> list:
    option, path = ("--file", many_file) if many_file is not None else ("--lines", lines_file)
    if "id" in overrides:
        raise BadInput(f"--id cannot be used with {option}: each job takes its own id")
    source = "standard input" if path == "-" else path
    parse = parse_many if option == "--file" else parse_commands
    jobs = build_many(parse(read_text(path, option), source), overrides, defaults)
    check_batch(jobs)
    return jobs
