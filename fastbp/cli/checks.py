"""Checking config values: the checkers a schema is written in, and the one error a config raises.

A checker takes a parsed TOML value and returns it (normalised: numbers become floats) or
raises :class:`BadValue` with the problem; :func:`check_table` checks a table against a schema
and turns a ``BadValue`` into a :class:`ConfigError` naming the file and the dotted key. The
messages are the command line's contract (``tests/test_cli.py``), e.g.
``exp.toml: training.epochs: expected an integer, got "four" (a string)``.
"""

import copy
import difflib
import json
import math
import os
import re

EXIT_FAIL, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130   # the command's exit statuses
REQUIRED = object()     # a schema default: the key must be given
TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
              dict: "a table"}


class ConfigError(Exception):
    """A problem with a config, reported as ``FILE: KEY: message`` (one line, exit status 2)."""

    def __init__(self, file, key, message):
        self.file, self.key, self.message = file, key, message
        super().__init__(" ".join(f"{file}: {key + ': ' if key else ''}{message}".split()))


class BadValue(Exception):
    """A bad value; whoever knows its key turns it into a ConfigError."""


def toml_value(v):
    """A value as TOML writes it (for messages and the resolved config)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def show(v):
    """A value and its TOML type, shortened, for a message: ``"four" (a string)``."""
    text = toml_value(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({TOML_TYPES.get(type(v), type(v).__name__)})"


def toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def join_key(path, k):
    return f"{path}.{toml_key(k)}" if path else toml_key(k)


def did_you_mean(word, choices):
    hint = difflib.get_close_matches(word, list(choices), 1)
    return f" (did you mean {json.dumps(hint[0])}?)" if hint else ""


# ---- checkers: each returns the (normalised) value or raises BadValue ---------------------------
def integer(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadValue(f"expected an integer, got {show(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise BadValue(f"must be {_range(lo, hi)}, got {v}")
        return v
    return check


def _range(lo, hi, lo_open=False, hi_open=False):
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def number(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadValue(f"expected a number, got {show(v)}")
        f = float(v)
        bad = (not math.isfinite(f) or (lo is not None and (f <= lo if lo_open else f < lo))
               or (hi is not None and (f >= hi if hi_open else f > hi)))
        if bad:
            raise BadValue(f"must be a finite number {_range(lo, hi, lo_open, hi_open)}, got {toml_value(v)}")
        return f
    return check


def boolean(v):
    if not isinstance(v, bool):
        raise BadValue(f"expected true or false, got {show(v)}")
    return v


def string(choices=None, aliases=None):
    def check(v):
        if not isinstance(v, str):
            raise BadValue(f"expected a string, got {show(v)}")
        if choices is not None and v not in choices and v not in (aliases or {}):
            raise BadValue(f"unknown name {json.dumps(v)}{did_you_mean(v, [*choices, *(aliases or {})])}; "
                           f"choose from {', '.join(map(json.dumps, choices))}")
        return v
    return check


def array(item, n=None, min_n=0):
    def check(v):
        if not isinstance(v, list):
            raise BadValue(f"expected an array, got {show(v)}")
        if (n is not None and len(v) != n) or len(v) < min_n:
            raise BadValue(f"expected {n if n is not None else f'at least {min_n}'} values, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except BadValue as e:
                raise BadValue(f"item {i}: {e}") from None
        return out
    return check


def either(*checks):
    """The first check that accepts the value; else the first check's complaint."""
    def check(v):
        first = None
        for c in checks:
            try:
                return c(v)
            except BadValue as e:
                first = first or e
        raise first
    return check


def one_or_list(item):
    def check(v):
        return array(item, min_n=1)(v) if isinstance(v, list) else item(v)
    return check


def any_table(v):
    if not isinstance(v, dict):
        raise BadValue(f"expected a table, got {show(v)}")
    return v


def anything(v):
    """No check here: the library checks the value (and its InputError names the key)."""
    return v


# ---- tables ------------------------------------------------------------------------------------------
class Context:
    """Where a config came from: its file name (for messages) and folder (for relative paths)."""

    def __init__(self, file, overrides=()):
        self.file = file
        self.base = os.path.dirname(os.path.abspath(file))
        self.overrides = dict(overrides)   # dotted key -> where it was set ("--set", "sweep trial 3")

    def error(self, key, message):
        origin = next((src for k, src in self.overrides.items() if key == k or key.startswith(k + ".")), None)
        return ConfigError(self.file, key, message + (f" (set by {origin})" if origin else ""))


def check_table(ctx, value, schema, path):
    """Validate a table against ``schema`` (key -> (checker, default), or ("table", sub-schema));
    fill defaults; return a new dict. A sub-table left out is None."""
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a table, got {show(value)}")
    for k in value:
        if k not in schema:
            raise ctx.error(join_key(path, k), f"unknown key{did_you_mean(k, schema)}; "
                                               f"{path} takes {', '.join(schema)}")
    out = {}
    for k, (check, default) in schema.items():
        key = join_key(path, k)
        if check == "table":
            out[k] = check_table(ctx, value[k], default, key) if k in value else None
            continue
        if k not in value:
            if default is REQUIRED:
                raise ctx.error(key, "missing (required)")
            out[k] = copy.deepcopy(default)
            continue
        try:
            out[k] = check(value[k])
        except BadValue as e:
            raise ctx.error(key, str(e)) from None
    return out


def section(ctx, raw, name):
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ctx.error(name, f"expected a table, got {show(value)}")
    return value


def pick(ctx, table, path, key, check, default):
    """One key checked ahead of its table: the one that decides the rest of the table's schema."""
    return check_table(ctx, {key: table[key]} if key in table else {}, {key: (check, default)}, path)[key]


def check_args(ctx, value, args, path, what, required=()):
    """Keyword arguments of an optimizer or schedule: known names, right types."""
    out = {}
    for k, v in value.items():
        if k == "name":
            continue
        if k not in args:
            raise ctx.error(join_key(path, k), f"unknown key for {what}{did_you_mean(k, args)}; "
                                               f"it takes {', '.join(['name', *args])}")
        try:
            out[k] = args[k](v)
        except BadValue as e:
            raise ctx.error(join_key(path, k), str(e)) from None
    for k in required:
        if k not in out:
            raise ctx.error(join_key(path, k), f"missing (required by {what})")
    return out
