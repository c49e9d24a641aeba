"""Hostile inputs: any value the schema admits, for every column of the three tables, and
any payload on the channel.

One definition serves two drivers. The property test (``test_total_inputs.py``) draws from
the hypothesis strategies, which shrink a failure to the smallest row; the soak
(``tests/faults/soak.py``) picks from the same pools with a seeded ``random.Random``.
Each column has a *kind*; each kind has plausible values (drawn first, so a shrunk
example keeps every column ordinary but the guilty one), odd values (the edges of its
type: ``'infinity'``, NaN, 2**31-1, a cron that never fires, ...) and, for hypothesis,
arbitrary generated ones.

A value is SQL, not Python: timestamps like ``'-infinity'`` and floats like NaN travel as
text cast by Postgres, so the row that reaches the table is exactly the one printed in a
failure (``Row.sql()``).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from hypothesis import strategies as st

#: The package of modules that misbehave on import (allowed explicitly for the workers).
POISON = "tests.faults.poison"
#: Workers of the property test and the soak allow this, and nothing else.
ALLOWED_MODULES = ["tests.testapp", POISON]

#: Names a row may carry, and what running one must end as: "completed", an error code,
#: or "either" (completed or exception, depending on the arguments).
NAMES: dict[str, str] = {
    "tests.testapp.tasks:echo": "completed",
    "tests.testapp.tasks:noop": "either",
    "tests.testapp.tasks:add": "either",
    "tests.testapp.tasks:async_add": "either",
    "tests.testapp.tasks:Greeter.greet": "either",
    "tests.testapp.tasks:Greeter": "either",
    "tests.testapp.tasks:sleep": "sleep",
    "tests.testapp.tasks:raise_error": "exception",
    "tests.testapp.tasks:call_sys_exit": "exception",
    "tests.testapp.tasks:raise_keyboard_interrupt": "exception",
    "tests.testapp.tasks:exit_hard": "exception",
    f"{POISON}.values:Bomb": "exception",
    # Everything below must fail as unknown_task, without running anything.
    f"{POISON}.raises_on_import:run": "unknown_task",
    f"{POISON}.exits_on_import:run": "unknown_task",
    # Ends the child before it can report: indistinguishable from a task doing the same.
    f"{POISON}.os_exit_on_import:run": "unknown_task or exception",
    f"{POISON}.interrupts_on_import:run": "unknown_task",
    f"{POISON}.values:NOT_CALLABLE": "unknown_task",
    f"{POISON}.values:NOTHING": "unknown_task",
    f"{POISON}.values:A_LIST": "unknown_task",
    f"{POISON}.values:missing": "unknown_task",
    f"{POISON}.missing_module:run": "unknown_task",
    "tests.testapp.tasks:os.system": "unknown_task",
    "tests.testapp.tasks:__class__": "unknown_task",
    "tests.testapp.tasks:": "unknown_task",
    "django_pq.worker.children:kill_group": "unknown_task",
    "os:system": "unknown_task",
    "builtins:eval": "unknown_task",
    "no colon at all": "unknown_task",
    ":": "unknown_task",
    "": "unknown_task",
}
PLAIN_NAMES = ["tests.testapp.tasks:echo", "tests.testapp.tasks:add"]


def expected_for_name(name: str) -> str:
    """What running a row of this name must end as (unknown names: ``unknown_task``)."""
    return NAMES.get(name, "unknown_task")


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One SQL value: an expression with its parameters (``%s::timestamptz``, ``NULL``)."""

    expression: str
    params: tuple[Any, ...] = ()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints the SQL, not the dataclass

    def __repr__(self) -> str:
        text = self.expression
        for param in self.params:
            text = text.replace("%s", _literal(param), 1)
        return text


def _literal(param: Any) -> str:
    if isinstance(param, str):
        return "'" + param.replace("'", "''") + "'"
    return repr(param)


NULL = Value("NULL")


def cast(text: Any, sql_type: str) -> Value:
    return Value(f"%s::{sql_type}", (str(text),))


def timestamp_literal(text: str) -> Value:
    return cast(text, "timestamptz")


def seconds_from_now(seconds: float) -> Value:
    return Value("now() + %s::float8 * interval '1 second'", (repr(float(seconds)),))


# -- the pools ---------------------------------------------------------------------------

ODD_TIMESTAMPS = [
    "infinity",
    "-infinity",
    "0001-01-01 00:00:00+00",
    "294276-12-31 23:59:59.999999+00",
    "4713-11-24 00:00:00+00 BC",
    "1970-01-01 00:00:00+00",
    "9999-12-31 23:59:59+00",
]
ODD_FLOATS = ["NaN", "Infinity", "-Infinity", "0", "-0", "5e-324", "1e-300", "1e308", "-1"]
ODD_INTS = [0, -1, 1, 32767, 32768, -32768, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63)]
ODD_TEXT = [
    "",
    " ",
    "\t\n",
    "é" * 100,
    "\U0001f642" * 64,
    "a" * 255,
    "a" * 256,
    "'; DROP TABLE pq_tasks; --",
    "\u202e\ufeff",
    "default\n",
    "%s %(x)s {}",
]
ODD_CRONS = [
    "0 0 30 2 *",  # February 30th: valid fields, never fires
    "0 0 31 4 *",
    "* * * * * * *",
    "60 * * * *",
    "",
    "@reboot",
    "*/0 * * * *",
    "0 0 * * 8",
    "9999999999 * * * *",
    "@yearly",
    "* * * * *",
]
ODD_TIMEZONES = ["", "Not/AZone", "UTC+99", "../../etc/passwd", "Europe/Berlin ", "localtime"]
ODD_INTERVALS = [
    "1 microsecond",
    "178000000 years",
    "-1 second",
    "0",
    "1 month",
    "1 mon -30 days",
    "106751991 days",
    "1 day -86399 seconds",
]


def _nested(depth: int) -> str:
    return '{"args": [' + "[" * depth + "]" * depth + '], "kwargs": {}}'


ODD_PAYLOADS = [
    "[]",
    "null",
    "1",
    '"args"',
    "true",
    "{}",
    '{"args": 1, "kwargs": {}}',
    '{"args": [], "kwargs": []}',
    '{"args": [], "kwargs": {}, "extra": 1}',
    '{"args": null, "kwargs": null}',
    '{"args": [1e400], "kwargs": {}}',
    '{"args": [' + "9" * 5000 + '], "kwargs": {}}',
    '{"args": [-0.0, 1e-400], "kwargs": {}}',
    '{"args": [{"__pq__": "nope", "v": 1}], "kwargs": {}}',
    '{"args": [{"__pq__": "datetime", "v": "not a date"}], "kwargs": {}}',
    '{"args": [{"__pq__": "decimal", "v": "NaN"}], "kwargs": {}}',
    '{"args": [{"__pq__": "timedelta", "v": [1e300, 0, 0]}], "kwargs": {}}',
    '{"args": [{"__pq__": "timedelta", "v": [999999999999, 0, 0]}], "kwargs": {}}',
    '{"args": [{"__pq__": "int", "v": "' + "f" * 20000 + '"}], "kwargs": {}}',
    '{"args": [{"__pq__": "pickle", "v": "gASVAAAAAAAAAAB9lC4=:forged"}], "kwargs": {}}',
    '{"args": [{"__pq__": "set", "v": [[1]]}], "kwargs": {}}',
    '{"args": [{"__pq__": "dict", "v": [[[1], 2]]}], "kwargs": {}}',
    '{"args": [{"__pq__": "datetime", "v": "2020-01-01T00:00:00", "zone": "Nope/Zone"}], '
    '"kwargs": {}}',
    '{"args": [{"__pq__": "datetime", "v": "2020-01-01T00:00:00", "offset": 99999999999999}], '
    '"kwargs": {}}',
    '{"args": [], "kwargs": {"": 1, "self": 2, "**": 3}}',
    _nested(1000),
    _nested(5000),
]
PLAIN_PAYLOADS = ['{"args": [], "kwargs": {}}', '{"args": [2, 3], "kwargs": {}}']
#: The sleep task's payloads: short runs, and one that only a max_runtime ends.
SLEEP_PAYLOADS = ['{"args": [0.01], "kwargs": {}}', '{"args": [3600], "kwargs": {}}']


def _json_values() -> st.SearchStrategy[Any]:
    text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))
    leaves = st.none() | st.booleans() | st.integers() | text
    leaves |= st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=12,
    )


def _generated_payload() -> st.SearchStrategy[str]:
    value = _json_values()
    shaped = st.fixed_dictionaries({"args": st.lists(value, max_size=3) | value, "kwargs": value})
    return (shaped | value).map(json.dumps)


_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=300)


@dataclass(frozen=True)
class Kind:
    """How to choose one column's value: plausible and odd pools, and a generator."""

    plausible: list[Value]
    odd: list[Value]
    generated: st.SearchStrategy[Value] | None = None
    nullable: bool = False

    def strategy(self) -> st.SearchStrategy[Value]:
        choices = [st.sampled_from(self.plausible)]
        if self.nullable:
            choices.append(st.just(NULL))
        if self.odd:
            choices.append(st.sampled_from(self.odd))
        if self.generated is not None:
            choices.append(self.generated)
        return st.one_of(choices)

    def pick(self, rng: random.Random, oddness: float) -> Value:
        if self.nullable and rng.random() < 0.1:
            return NULL
        pool = self.odd if self.odd and rng.random() < oddness else self.plausible
        return rng.choice(pool)


def _casts(values: list[Any], sql_type: str) -> list[Value]:
    return [cast(value, sql_type) for value in values]


def _timestamps(plausible_seconds: list[float]) -> Kind:
    return Kind(
        [seconds_from_now(s) for s in plausible_seconds],
        [timestamp_literal(t) for t in ODD_TIMESTAMPS],
        st.floats(-1e13, 1e13).map(seconds_from_now),
    )


def _ints(plausible: list[int], *, nullable: bool = False) -> Kind:
    return Kind(
        _casts(plausible, "numeric"),
        _casts(ODD_INTS, "numeric"),
        st.integers(-(2**64), 2**64).map(lambda n: cast(n, "numeric")),
        nullable,
    )


def _floats(plausible: list[str]) -> Kind:
    return Kind(
        _casts(plausible, "float8"),
        _casts(ODD_FLOATS, "float8"),
        st.floats().map(lambda x: cast(x, "float8")),
        nullable=True,
    )


def _texts(plausible: list[str], odd: list[str] | None = None, nullable: bool = False) -> Kind:
    return Kind(
        _casts(plausible, "text"),
        _casts(ODD_TEXT if odd is None else odd, "text"),
        _TEXT.map(lambda text: cast(text, "text")),
        nullable,
    )


def _json(plausible: list[str], odd: list[str], nullable: bool = False) -> Kind:
    return Kind(
        _casts(plausible, "jsonb"),
        _casts(odd, "jsonb"),
        _generated_payload().map(lambda text: cast(text, "jsonb")),
        nullable,
    )


def _jsonb(text: str) -> Value:
    return cast(text, "jsonb")


def _random_uuid() -> Value:
    return cast(uuid.uuid4(), "uuid")


_STATUSES = ["pending", "running", "completed", "failed", "cancelled"]
_CODES = ["", "exception", "timeout", "worker_lost", "unknown_task", "cancelled"]

#: A pq_workers row referred to by a task row of the same example: resolved at insert.
FAKE_WORKER = Value("%(fake_worker)s")

_VERSION = json.dumps(
    {
        "name": "tests.testapp.tasks:echo",
        "payload": {"args": [1], "kwargs": {}},
        "queue": "default",
        "priority": 50,
        "run_at": None,
        "max_attempts": 1,
        "max_runtime": None,
    }
)
_ODD_VERSIONS = [
    "5",
    "[]",
    "{}",
    '{"name": null}',
    '{"name": "tests.testapp.tasks:echo", "priority": "high"}',
    '{"name": "tests.testapp.tasks:echo", "payload": {"args": [], "kwargs": {}}, '
    '"queue": "default", "priority": 50, "run_at": "not a time", "max_attempts": 1}',
    '{"name": "tests.testapp.tasks:echo", "payload": {"args": [], "kwargs": {}}, '
    '"queue": "default", "priority": 50, "run_at": null, "max_attempts": 0}',
]

KINDS: dict[str, Kind] = {
    "queue": _texts(["default", "other"]),
    "name": Kind(
        _casts(PLAIN_NAMES, "text"),
        _casts(list(NAMES), "text"),
        _TEXT.map(lambda text: cast(text, "text")),
    ),
    "payload": _json(PLAIN_PAYLOADS, ODD_PAYLOADS),
    "sleep_payload": Kind(_casts(SLEEP_PAYLOADS, "jsonb"), []),
    "priority": _ints([50, 0, 100, 75]),
    "status": Kind(_casts(["pending"], "text"), _casts([*_STATUSES, "PENDING", ""], "text")),
    "run_at": _timestamps([0, -1, -3600]),
    "timestamp": _timestamps([0, -60]),
    "optional_timestamp": Kind(
        [NULL], [timestamp_literal(t) for t in ODD_TIMESTAMPS], nullable=True
    ),
    "attempts": _ints([0, 1]),
    "max_attempts": _ints([1, 3]),
    "optional_max_attempts": _ints([1], nullable=True),
    "max_runtime": _floats(["30", "0.5"]),
    "client_id": Kind(
        [NULL], _casts(["x", *ODD_TEXT], "text"), _TEXT.map(lambda t: cast(t, "text"))
    ),
    "key": Kind([Value("gen_random_uuid()::text")], _casts(ODD_TEXT, "text")),
    "requeue": Kind(
        [NULL], _casts([_VERSION, *_ODD_VERSIONS], "jsonb"), _generated_payload().map(_jsonb)
    ),
    "result": _json(["1"], ODD_PAYLOADS[:6], nullable=True),
    "bool": Kind(_casts(["false"], "boolean"), _casts(["true"], "boolean")),
    "error": _texts([""]),
    "error_code": Kind(_casts([""], "text"), _casts(_CODES, "text")),
    "worker_ref": Kind([NULL], [FAKE_WORKER, Value("gen_random_uuid()")], nullable=True),
    "run_token": Kind([Value("gen_random_uuid()")], [], nullable=True),
    "big": _ints([0], nullable=True),
    "cpu": _floats(["0.1"]),
    "run_every": Kind(
        _casts(["1 second", "1 hour"], "interval"),
        _casts(ODD_INTERVALS, "interval"),
        st.floats(-1e12, 1e12).map(lambda s: Value("%s::float8 * interval '1 second'", (str(s),))),
        nullable=True,
    ),
    "cron": Kind([NULL], _casts(ODD_CRONS, "text"), _TEXT.map(lambda t: cast(t, "text"))),
    "timezone": _texts(["UTC"], ["Europe/Berlin", "America/New_York", *ODD_TIMEZONES]),
    "max_concurrent": _ints([1], nullable=True),
    "active": Kind(_casts(["true"], "boolean"), _casts(["false"], "boolean")),
    "json_list": _json(["[]", '["default"]', "[50]"], ['{"a": 1}', "null", "1", '"x"', "[[]]"]),
    "smallint_or_null": _ints([0], nullable=True),
    "concurrency": _ints([1, 2]),
    "hostname": _texts(["elsewhere"]),
    "pid": _ints([1, 999999]),
    "lease": _timestamps([-3600, 2, -86400 * 2]),
    "version": _texts(["0.1"]),
}

#: Each table's columns (all but the id) and the kind of value each one takes.
COLUMNS: dict[str, dict[str, str]] = {
    "pq_tasks": {
        "queue": "queue",
        "name": "name",
        "payload": "payload",
        "priority": "priority",
        "status": "status",
        "run_at": "run_at",
        "created_at": "timestamp",
        "started_at": "optional_timestamp",
        "finished_at": "optional_timestamp",
        "attempts": "attempts",
        "max_attempts": "max_attempts",
        "max_runtime": "max_runtime",
        "client_id": "client_id",
        "requeue": "requeue",
        "is_cancel_requested": "bool",
        "result": "result",
        "error": "error",
        "error_code": "error_code",
        "slot": "optional_timestamp",
        "worker_id": "worker_ref",
        "run_token": "run_token",
        "peak_rss": "big",
        "cpu_seconds": "cpu",
    },
    "pq_periodic": {
        "name": "name",
        "key": "key",
        "payload": "payload",
        "priority": "priority",
        "queue": "queue",
        "run_every": "run_every",
        "cron": "cron",
        "timezone": "timezone",
        "next_run": "run_at",
        "last_run": "optional_timestamp",
        "max_concurrent": "max_concurrent",
        "active": "active",
        "max_runtime": "max_runtime",
        "max_attempts": "optional_max_attempts",
        "client_id": "client_id",
        "skipped_runs": "attempts",
        "is_declared": "bool",
        "created_at": "timestamp",
        "updated_at": "timestamp",
    },
    "pq_workers": {
        "hostname": "hostname",
        "pid": "pid",
        "queues": "json_list",
        "priorities": "json_list",
        "min_priority": "smallint_or_null",
        "concurrency": "concurrency",
        "started_at": "timestamp",
        "heartbeat_at": "timestamp",
        "lease_expires_at": "lease",
        "stopped_at": "optional_timestamp",
        "version": "version",
    },
}


# -- rows --------------------------------------------------------------------------------


@dataclass
class Row:
    """A generated row of one table, printed as the INSERT that writes it."""

    table: str
    values: dict[str, Value]
    id: Any = None
    refused: str = ""  # Postgres's refusal, when it would not store the row

    def sql(self, fake_worker: str | None = None) -> tuple[str, list[Any]]:
        columns = list(self.values)
        expressions, params = [], []
        for column in columns:
            value = self.values[column]
            if value is FAKE_WORKER:
                expressions.append("%s::uuid" if fake_worker else "NULL")
                params += [fake_worker] if fake_worker else []
                continue
            expressions.append(value.expression)
            params += list(value.params)
        returning = "id::text" if self.table == "pq_workers" else "id"
        statement = (
            f"INSERT INTO {self.table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(expressions)}) RETURNING {returning}"
        )
        return statement, params

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{column}={value!r}" for column, value in self.values.items())
        return f"{self.table}({shown})"


Chooser = Callable[[str], Value]


def build_row(table: str, choose: Chooser) -> Row:
    """A row of ``table`` with each column's value from ``choose(kind)``."""
    values = {column: choose(kind) for column, kind in COLUMNS[table].items()}
    if table == "pq_workers":
        values = {"id": _random_uuid(), **values}
    name = values.get("name")
    if name is not None and name.params and name.params[0] == "tests.testapp.tasks:sleep":
        # The sleep task gets only its own arguments, and a long sleep only a limit that
        # a worker must enforce (NaN and infinity included: the worker's own limit applies).
        values["payload"] = choose("sleep_payload")
        if "3600" in values["payload"].params[0]:
            runtime = values.get("max_runtime", NULL)
            text = runtime.params[0].lower() if runtime.params else ""
            if text and text not in {"nan", "inf", "infinity"} and not _is_small(text):
                values["max_runtime"] = cast("0.5", "float8")
    return Row(table, values)


def _is_small(text: str) -> bool:
    try:
        return float(text) < 10
    except ValueError:
        return False


def hypothesis_chooser(draw: Callable[[st.SearchStrategy[Value]], Value]) -> Chooser:
    """Draw each kind's value from its hypothesis strategy (``draw`` of a composite)."""
    strategies = {name: kind.strategy() for name, kind in KINDS.items()}
    plausible = {name: st.sampled_from(kind.plausible) for name, kind in KINDS.items()}

    def choose(kind: str) -> Value:
        # Mostly plausible, a few columns odd: a row odd in every column is refused by the
        # schema's checks and tests nothing, one odd in one or two columns gets through.
        if draw(st.integers(0, 9)) == 0:
            return draw(strategies[kind])
        return draw(plausible[kind])

    return choose


def random_chooser(rng: random.Random, oddness: float = 0.15) -> Chooser:
    """Pick each kind's value from its pools: plausible, or odd with ``oddness``."""
    return lambda kind: KINDS[kind].pick(rng, oddness)


def insert(conn: psycopg.Connection[Any], row: Row, fake_worker: str | None = None) -> bool:
    """Write ``row``; False, with ``row.refused`` set, when Postgres refuses it.

    Refusals are the schema doing its job (a CHECK constraint, a type's range, a unique
    key): such a value is not one "the schema admits" and is skipped. Inside a
    transaction of the caller's, a refusal rolls back to a savepoint, not the transaction.
    """
    statement, params = row.sql(fake_worker)
    try:
        with conn.transaction():
            [(row.id,)] = conn.execute(statement, params).fetchall()
    except (
        psycopg.errors.IntegrityError,
        psycopg.errors.DataError,
        psycopg.errors.ProgramLimitExceeded,  # JSON nested too deep for jsonb, say
    ) as error:
        row.refused = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        return False
    return True


# -- notifications -----------------------------------------------------------------------

#: Replaced at send time by ``c:<id>`` of a healthy task that is running right then.
CANCEL_HEALTHY = "c:<a running healthy task>"

ODD_NOTIFICATIONS = [
    "t:x",
    "t:",
    "t:5",
    "t:nan:default",
    "t:inf:default",
    "t:-inf:default",
    "t:1e309:default",
    "t:" + "9" * 400 + ":default",
    "t:²:default",
    "t:1:",
    "c:²",
    "c:",
    "c:-1",
    "c:" + "9" * 40,
    "c:١٢",
    "c: 1",
    "s:",
    "s:anything",
    "reconnected",
    "",
    "x" * 7999,
    CANCEL_HEALTHY,
]


def _near_valid() -> st.SearchStrategy[str]:
    number = st.floats().map(repr) | st.integers().map(str) | _TEXT
    return st.one_of(
        st.tuples(number, _TEXT).map(lambda parts: f"t:{parts[0]}:{parts[1]}"),
        number.map(lambda n: f"t:{n}"),
        number.map(lambda n: f"c:{n}"),
        _TEXT.map(lambda text: f"s:{text}"),
    )


NOTIFICATIONS: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(ODD_NOTIFICATIONS),
    _near_valid(),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=200),
)


def notify(conn: psycopg.Connection[Any], channel: str, payload: str) -> bool:
    """Send ``payload`` on ``channel``; False if Postgres refuses it (too long, say)."""
    try:
        conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])
    except (psycopg.errors.DataError, psycopg.errors.InvalidParameterValue):
        return False
    return True


@dataclass
class Inputs:
    """One example's worth of hostile input."""

    workers: list[Row] = field(default_factory=list)
    periodics: list[Row] = field(default_factory=list)
    tasks: list[Row] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
