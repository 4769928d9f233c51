"""The pure parts: durations and times, settings, job ids and JSON detection, the retry policy."""
from __future__ import annotations

import json
import math
import os
import re
import stat
from datetime import datetime, timezone

import pytest

from queuectl import config, jobspec, retry, timeutil
from queuectl.errors import BadInput, StoreError

# 2025-11-04T10:30:00Z, the example of SPEC.
T = datetime(2025, 11, 4, 10, 30, tzinfo=timezone.utc).timestamp()
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# -- timeutil: durations -------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("30", 30),
    ("30s", 30),
    ("5m", 300),
    ("2h", 7200),
    ("1d", 86400),
    ("0", 0),
    ("1.5", 1.5),
    ("1.5m", 90),
    (".5", 0.5),
    ("5M", 300),            # units are case-insensitive
    (" 5m ", 300),          # surrounding blanks are ignored
    ("36500d", 100 * 365 * 86400),  # the upper bound itself: 100 years
    (30, 30),               # a JSON number
    (2.5, 2.5),
])
def test_parse_duration(text, seconds):
    assert timeutil.parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    "", " ", "abc", "-5", "-1s", "5x", "5ms", "1y", "m", "1e3", "5 5m", "nan", "inf", "1,5",
    "36501d",               # more than 100 years
    -1, float("inf"), float("nan"), True, None,
])
def test_parse_duration_refuses(text):
    with pytest.raises(BadInput, match=r"invalid delay"):
        timeutil.parse_duration(text, "delay")


# -- timeutil: ISO 8601 ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2025-11-04T10:30:00Z", T),
    ("2025-11-04T10:30:00z", T),
    ("2025-11-04T10:30:00+00:00", T),
    ("2025-11-04T12:30:00+02:00", T),
    ("2025-11-04T05:30:00-05:00", T),
    ("2025-11-04T10:30:00", T),             # no offset: UTC
    ("2025-11-04T10:30:00.250Z", T + 0.25),  # fractions
    (" 2025-11-04T10:30:00Z ", T),
])
def test_parse_iso(text, expected):
    assert timeutil.parse_iso(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["", "  ", "tomorrow", "2025-13-01T00:00:00Z", "10:30", 1762252200, None])
def test_parse_iso_refuses(text):
    with pytest.raises(BadInput, match=r"invalid run_at .*ISO 8601"):
        timeutil.parse_iso(text, "run_at")


@pytest.mark.parametrize("ts, text", [
    (T, "2025-11-04T10:30:00.000Z"),
    (T + 0.25, "2025-11-04T10:30:00.250Z"),
    (0, "1970-01-01T00:00:00.000Z"),
])
def test_iso_is_utc_with_z(ts, text):
    assert timeutil.iso(ts) == text
    assert ISO_Z.match(text)


def test_iso_round_trips_and_keeps_none():
    assert timeutil.iso(None) is None
    for ts in (T, T + 0.125, 1.5e9 + 0.999):
        assert timeutil.parse_iso(timeutil.iso(ts)) == pytest.approx(ts, abs=1e-3)


# -- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, name", [
    ("max_retries", "max_retries"),
    ("max-retries", "max_retries"),
    ("MAX_RETRIES", "max_retries"),
    ("max_retries_default", "max_retries"),
    ("default_max_retries", "max_retries"),
    ("default-max-retries", "max_retries"),
    ("backoff_base", "backoff_base"),
    ("backoff-base", "backoff_base"),
    ("backoff_max", "backoff_max"),
    ("timeout_seconds", "timeout_seconds"),
    ("timeout-seconds", "timeout_seconds"),
    ("timeout", "timeout_seconds"),
    ("job_timeout", "timeout_seconds"),
    ("job-timeout", "timeout_seconds"),
    ("poll_interval", "poll_interval"),
    ("poll-interval", "poll_interval"),
    ("lease_seconds", "lease_seconds"),
    ("lease-seconds", "lease_seconds"),
])
def test_canonical_names_and_aliases(key, name):
    assert config.canonical(key) == name


@pytest.mark.parametrize("key", ["bogus", "", "retries", "max__retries", "max retries"])
def test_unknown_keys_are_refused_naming_the_valid_ones(key):
    with pytest.raises(BadInput, match=r"unknown config key .*valid keys: max_retries, backoff_base"):
        config.canonical(key)


def test_every_setting_has_a_default_and_the_spec_values():
    assert config.DEFAULTS == {"max_retries": 3, "backoff_base": 2, "backoff_max": 3600,
                               "timeout_seconds": 0, "poll_interval": 1.0, "lease_seconds": 30}


@pytest.mark.parametrize("name, value, stored", [
    ("max_retries", 0, 0),
    ("max_retries", 3, 3),
    ("max_retries", 3.0, 3),          # a whole float is stored as an integer
    ("backoff_base", 1, 1),           # the lowest base: a constant 1 s backoff
    ("backoff_base", 1.5, 1.5),
    ("backoff_max", 0, 0),
    ("backoff_max", 3600, 3600),
    ("timeout_seconds", 0, 0),        # no limit
    ("timeout_seconds", 2.5, 2.5),
    ("poll_interval", 0.05, 0.05),
    ("lease_seconds", 1, 1),
])
def test_validate_accepts(name, value, stored):
    result = config.validate(name, value)
    assert result == stored and type(result) is type(stored)


@pytest.mark.parametrize("name, value", [
    ("max_retries", -1),
    ("max_retries", 1.5),
    ("max_retries", True),
    ("max_retries", "3"),
    ("max_retries", None),
    ("backoff_base", 0.99),
    ("backoff_base", 0),
    ("backoff_base", float("nan")),
    ("backoff_base", float("inf")),
    ("backoff_max", -1),
    ("timeout_seconds", -1),
    ("poll_interval", 0),
    ("lease_seconds", 0),
    ("lease_seconds", -5),
])
def test_validate_refuses_saying_what_is_valid(name, value):
    with pytest.raises(BadInput, match=rf"{name} must be a (whole )?number from"):
        config.validate(name, value)


@pytest.mark.parametrize("name, text, value", [
    ("max_retries", "5", 5),
    ("max_retries", "5.0", 5),
    ("backoff_base", "1.5", 1.5),
    ("poll_interval", "0.5", 0.5),
])
def test_parse_value(name, text, value):
    assert config.parse_value(name, text) == value


@pytest.mark.parametrize("name, text", [("max_retries", "five"), ("backoff_base", "nan"), ("max_retries", "")])
def test_parse_value_refuses(name, text):
    with pytest.raises(BadInput):
        config.parse_value(name, text)


def test_format_value_is_bare():
    assert [config.format_value(v) for v in (3, 0, 1.0, 2.5)] == ["3", "0", "1.0", "2.5"]


def test_load_without_a_file_gives_a_copy_of_the_defaults(tmp_path):
    values = config.load(str(tmp_path / "config.json"))
    assert values == config.DEFAULTS
    values["max_retries"] = 99
    assert config.DEFAULTS["max_retries"] == 3


def test_load_accepts_aliases_and_hyphens(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"default-max-retries": 5, "job_timeout": 10}))
    values = config.load(str(path))
    assert (values["max_retries"], values["timeout_seconds"]) == (5, 10)


@pytest.mark.parametrize("content", ["garbage", "[1, 2]", '{"max_retries": -1}', '{"bogus": 1}', ""])
def test_corrupt_config_file_is_reported_with_its_path(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(StoreError, match=re.escape(f"corrupt config file {path}")):
        config.load(str(path))


def test_set_and_reset_store_canonical_names_in_a_private_file(tmp_path):
    path = str(tmp_path / "config.json")
    assert config.set_value(path, "max-retries", "7") == ("max_retries", 7)
    assert config.set_value(path, "timeout", "30") == ("timeout_seconds", 30)
    with open(path) as handle:
        stored = json.load(handle)
    assert stored == {**config.DEFAULTS, "max_retries": 7, "timeout_seconds": 30}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    assert config.reset(path, "job-timeout") == ["timeout_seconds"]
    assert config.load(path) == {**config.DEFAULTS, "max_retries": 7}
    assert config.reset(path) == list(config.DEFAULTS)
    assert config.load(path) == config.DEFAULTS


def test_a_refused_set_changes_nothing(tmp_path):
    path = str(tmp_path / "config.json")
    config.set_value(path, "max_retries", "4")
    with pytest.raises(BadInput):
        config.set_value(path, "max_retries", "-4")
    assert config.load(path)["max_retries"] == 4


# -- jobspec: ids and JSON detection -------------------------------------------------------------

@pytest.mark.parametrize("job_id", [
    "a", "job1", "J_1", "0", "a.b-c_d:e@f", "_x", ":x", "@x", "x.", "x-",
    "a" * 128,              # the longest id
    "2025-11-04T10:30:00Z",
])
def test_valid_ids(job_id):
    assert jobspec.validate_id(job_id) == job_id


@pytest.mark.parametrize("job_id", [
    "",
    "a" * 129,              # one too long
    ".hidden", "-rf", ".", "..",  # leading . or -
    "a/b", "../x", "/abs",
    "a b", " a", "a ",
    "a\nb", "a\n", "a\tb", "a\x00b", "a\x1b", "a\x7f",  # control characters
    "é", "a+b", "a,b", "a*", "a$b",
    5, None,
])
def test_invalid_ids_are_refused_with_the_rule(job_id):
    with pytest.raises(BadInput, match=re.escape(jobspec.ID_RULE)):
        jobspec.validate_id(job_id)


@pytest.mark.parametrize("text, is_json", [
    ('{"id":"job1","command":"sleep 2"}', True),
    ('  {"command":"x"}', True),
    ("{ echo a; echo b; }", True),       # `{` always starts JSON (use --cmd for a shell group)
    ('["a"]', True),
    ('"a string"', True),
    ("42", True),
    ("-1", True),
    ("-1.5", True),
    (".5", False),                       # not JSON: a JSON number cannot start with `.`
    ("[ -f x ] && make", False),         # a shell test, not JSON
    ('"unterminated', False),
    ("echo hi", False),
    ("42 things", False),
    ("./run.sh", False),
    ("-rf", False),
])
def test_looks_like_json(text, is_json):
    assert jobspec.looks_like_json(text) is is_json


@pytest.mark.parametrize("obj, accepted", [
    ({"state": "pending", "attempts": 0, "exit_code": None, "last_error": None}, True),
    ({"created_at": "2025-11-04T10:30:00Z", "updated_at": "anything"}, True),
    ({"state": "completed"}, False),
    ({"state": "failed"}, False),
    ({"attempts": 1}, False),
    ({"attempts": False}, False),
    ({"exit_code": 0}, False),
    ({"last_error": "boom"}, False),
    ({"bogus": 1}, False),
    ({"worker_id": None}, False),
])
def test_full_job_form_keys(obj, accepted):
    if accepted:
        jobspec.check_keys(obj)
    else:
        with pytest.raises(BadInput):
            jobspec.check_keys(obj)


@pytest.mark.parametrize("text", [
    '{"command":"a"}\n{"command":"b"',                       # an unterminated last line
    '{"command":"a"}, {"id":"b"\n"command":"b"}',             # one object split over two lines
    '{"command":"a"},{"command":"b"}\n{"command":"c"}',      # two objects on one line
    '{"command":"a"}\n{"command":"b", "priority": [1\n2]}',  # an array split over two lines
    # a split value, made up for by a line holding two values: as many values as lines
    '{"command":"a","created_at":[1\n2]}\n{"command":"b"},{"command":"c"}',
    '{"command":"a","created_at":[1\n2]}\n{"command":"b"},NaN,{"command":"c"}',
    '{"command":"a"}\n{"command":NaN}',                      # NaN is not JSON
])
def test_malformed_json_lines_are_refused(text):
    with pytest.raises(BadInput, match=r"malformed JSON at f line \d"):
        jobspec.parse_many(text, "f")


def test_json_lines_name_each_line_counting_blank_ones():
    entries = jobspec.parse_many('{"command":"a"}\n\n  \n{"command":"b"}\r\n', "jobs.jsonl")
    assert entries.numbered == [(1, {"command": "a"}), (4, {"command": "b"})]
    assert entries.where(4) == "jobs.jsonl line 4"


def test_json_array_entries_are_named_by_item_even_in_a_file_named_with_braces():
    entries = jobspec.parse_many('[{"command":"a"}, {"command":"b"}]', "{odd}.json")
    assert entries.numbered == [(1, {"command": "a"}), (2, {"command": "b"})]
    assert entries.where(2) == "{odd}.json item 2"


def test_json_lines_are_split_only_at_newlines():
    """JSON allows U+2028 and the like inside strings; str.splitlines() would break the line there."""
    text = '{"command":"echo a\u2028b"}\n{"command":"echo c\x85d\u2029e"}'
    assert [obj["command"] for _, obj in jobspec.parse_many(text, "f").numbered] == ["echo a\u2028b", "echo c\x85d\u2029e"]


# -- retry policy --------------------------------------------------------------------------------

@pytest.mark.parametrize("attempts, base, cap, delay", [
    (1, 2, 3600, 2),                # the first failure waits base ** 1
    (2, 2, 3600, 4),                # the second waits base ** 2
    (3, 2, 3600, 8),                # ... and the third base ** 3
    (12, 2, 3600, 3600),            # 4096 s is capped by backoff_max
    (1, 1, 3600, 1),                # base 1: a constant second
    (50, 1, 3600, 1),               # ... whatever the attempt
    (1, 1.5, 3600, 1.5),            # a fractional base
    (5, 3, 100, 100),               # 243 s capped at 100
    (3, 2, 0, 0),                   # backoff_max 0: retry at once
    (1_000_000, 2, 3600, 3600),     # a huge attempt count does not overflow: the cap applies
    (10 ** 9, 1000, 60, 60),        # ... nor with a huge base
])
def test_backoff_delay(attempts, base, cap, delay):
    assert retry.backoff_delay(attempts, base, cap) == delay


NOW = 1_000_000.0


@pytest.mark.parametrize("attempts, max_retries, base, cap, expected", [
    (1, 0, 2, 3600, None),                          # max_retries 0: dead after the first failure
    (1, 2, 2, 3600, NOW + 2),                       # max_retries 2, base 2: retry 2 s after run 1
    (2, 2, 2, 3600, NOW + 4),                       # ... 4 s after run 2
    (3, 2, 2, 3600, None),                          # ... and run 3 is the last: dead
    (1, 3, 2, 3600, NOW + 2),                       # the defaults: first retry after 2 s
    (4, 3, 2, 3600, None),                          # ... dead after the 4th run
    (20, 50, 2, 3600, NOW + 3600),                  # capped by backoff_max
    (1_000_000, 1_000_000, 2, 3600, NOW + 3600),    # huge attempts don't overflow
    (1_000_001, 1_000_000, 2, 3600, None),          # ... and still end in the DLQ
])
def test_next_run_at(attempts, max_retries, base, cap, expected):
    assert retry.next_run_at(attempts, max_retries, base, cap, NOW) == expected


def test_retry_policy_gives_finite_numbers():
    assert math.isfinite(retry.backoff_delay(10 ** 12, 1e300, 3600))
