"""Inserting many rows at once: one multi-row INSERT per chunk on SQLite, executemany elsewhere.

Python's sqlite3 module lets go of the GIL around every ``sqlite3_step`` and must take it back after, and
``executemany`` steps once per row. While the event loop's thread is running Python, the database thread
so waits for the GIL at every row: on this project's machine a 250-row ``executemany`` took 0.9 ms alone
and 205 ms beside a busy Python thread, the same rows as multi-row INSERTs 12 ms. A push writes three
rows, so under load this was the push path's limit. Other drivers (asyncpg, psycopg) batch an
executemany on their own and keep it.

SQLite compiles a statement at about 1 µs per row (or per value of an ``IN`` list), and the driver keeps
the compiled statements of the last 128 SQL texts. A batch's statements are therefore cut to a few sizes
(a power of two of rows; ``in_lists`` for ``IN``), whose compiled statements are reused whatever the
batch's size, instead of a text of its own compiled each time. With batches of 50 to 250 pushes, in a
microbenchmark of the journal's transactions: 31.2 against 26.6 µs per push, inserts and outcomes.

The rows are dicts of column values as ``insert(table)`` takes them; a column left out gets its Python
default exactly as SQLAlchemy would give it (scalar or zero-argument callable), or NULL / the server's
default when it has none. Values pass through each column type's own bind processor, so what is stored is
what the ORM would store.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Column, Connection, Executable, Table, bindparam, insert
from sqlalchemy.engine import Dialect

__all__ = ["ListedStatement", "in_lists", "insert_rows"]

# Rows per statement at most (fewer where the variable limit says so); each statement holds a power of
# two of them (``_chunk_size``).
_LARGEST_CHUNK = 512
_SQLITE_MAX_VARIABLES = 32_766  # SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32
_LARGEST_IN_LIST = 512  # values per IN (...) list, well below every backend's limit on bound parameters
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Plan:
    """How rows with one set of keys go into one table: the columns given, then those filled by their
    defaults, and the SQL per chunk size. A row's values are read with one ``itemgetter`` and only the
    columns whose type has a bind processor are processed (0.4 µs less per push than a loop over every
    column, in the journal)."""

    given: Callable[[dict[str, Any]], tuple[Any, ...]]  # the row's values of the columns it gives, in order
    defaults: tuple[Callable[[], Any], ...]  # the Python defaults of the columns it leaves out
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # position in a row's values -> bind processor
    head: str  # INSERT INTO t (a, b) VALUES
    group: str  # (?, ?)
    largest: int

    def sql(self, rows: int) -> str:
        return self.head + ", ".join([self.group] * rows)

    def values(self, row: dict[str, Any]) -> list[Any]:
        values = [*self.given(row), *(default() for default in self.defaults)]
        for at, process in self.processed:
            values[at] = process(values[at])
        return values


# Per dialect object (its processors belong to it, e.g. the engine's JSON serializer), gone with its engine.
_plans: weakref.WeakKeyDictionary[Dialect, dict[tuple[Table, frozenset[str]], _Plan | None]] = (
    weakref.WeakKeyDictionary()
)


def insert_rows(connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) into ``table`` within ``connection``'s transaction."""
    if not rows:
        return
    dialect = connection.dialect
    plan = _plan(table, frozenset(rows[0]), dialect) if dialect.name == "sqlite" else None
    if plan is None:
        connection.execute(insert(table), list(rows))
        return
    start = 0
    while start < len(rows):
        chunk = rows[start : start + _chunk_size(len(rows) - start, plan.largest)]
        start += len(chunk)
        values: list[Any] = []
        for row in chunk:
            values += plan.values(row)
        connection.exec_driver_sql(plan.sql(len(chunk)), tuple(values))


class ListedStatement:
    """A statement with one ``IN`` list of bound values, run for any number of values.

    ``make`` builds it for a list of given bound parameters. On SQLite it is compiled once per list length
    of ``in_lists`` to SQL text, and run as that text with the values in order: SQLAlchemy's own way, an
    expanding parameter, renders the list's text again at every execution (the recorder took 6.2 µs per
    outcome that way, 4.7 this way, on this project's machine). Elsewhere SQLAlchemy runs the statement
    made for the list's length. Besides the list's values, its other parameters are bound by name."""

    def __init__(self, make: Callable[[list[BindParameter[Any]]], Executable]) -> None:
        self._make = make
        self._shapes: weakref.WeakKeyDictionary[Dialect, dict[int, _Shape]] = weakref.WeakKeyDictionary()

    def run(self, connection: Connection, values: Sequence[Any], params: Mapping[str, Any]) -> list[Any]:
        """Run it for ``values`` (in lists of at most ``_LARGEST_IN_LIST``); returns the first column of
        the rows it selects, if it selects."""
        found: list[Any] = []
        for part in in_lists(values):
            dialect = connection.dialect
            if dialect.paramstyle != "qmark":
                names = [f"in_{n}" for n in range(len(part))]
                bound = {**params, **dict(zip(names, part, strict=True))}
                result = connection.execute(self._make([bindparam(name) for name in names]), bound)
            else:
                shapes = self._shapes.setdefault(dialect, {})
                shape = shapes.get(len(part)) or shapes.setdefault(len(part), self._shape(dialect, len(part)))
                result = connection.exec_driver_sql(shape.sql, shape.parameters(part, params))
            if result.returns_rows:
                found += result.scalars().all()
        return found

    def _shape(self, dialect: Dialect, length: int) -> _Shape:
        names = [f"in_{n}" for n in range(length)]
        compiled = self._make([bindparam(name) for name in names]).compile(dialect=dialect)
        order = list(compiled.positiontup or ())
        start = order.index(names[0])
        if order[start : start + length] != names:
            raise ValueError("the IN list's parameters are not in one place of the statement")

        def bound(name: str) -> tuple[str, Callable[[Any], Any] | None]:
            kind = compiled.binds[name].type
            return name, kind.dialect_impl(dialect).bind_processor(dialect)

        return _Shape(
            compiled.string,
            [bound(name) for name in order[:start]],
            bound(names[0])[1],
            [bound(name) for name in order[start + length :]],
        )


@dataclass(frozen=True, slots=True)
class _Shape:
    """A ``ListedStatement`` compiled for one list length: its SQL and how to order its parameters."""

    sql: str
    before: list[tuple[str, Callable[[Any], Any] | None]]  # parameters ahead of the list, with processors
    listed: Callable[[Any], Any] | None  # the list values' processor
    after: list[tuple[str, Callable[[Any], Any] | None]]

    def parameters(self, values: list[Any], params: Mapping[str, Any]) -> tuple[Any, ...]:
        def named(at: list[tuple[str, Callable[[Any], Any] | None]]) -> list[Any]:
            return [params[name] if process is None else process(params[name]) for name, process in at]

        listed = values if self.listed is None else [self.listed(value) for value in values]
        return (*named(self.before), *listed, *named(self.after))


def in_lists(values: Sequence[T]) -> Iterator[list[T]]:
    """``values`` cut into lists for ``IN (...)`` of at most ``_LARGEST_IN_LIST``, each padded to one of a
    few lengths by repeating its last value (``IN`` does not mind)."""
    for start in range(0, len(values), _LARGEST_IN_LIST):
        part = list(values[start : start + _LARGEST_IN_LIST])
        part += part[-1:] * (_list_length(len(part)) - len(part))
        yield part


def _list_length(values: int) -> int:
    """The least of 1, 2, 3, 4, 6, 8, 12, 16, 24 … (a power of two, or three quarters of one) that holds
    ``values``: 18 lengths up to 512, a list padded by a sixth on average."""
    power = 1 << (values - 1).bit_length()  # the least power of two that holds ``values``
    return 3 * power // 4 if 3 * power // 4 >= values else power


def _chunk_size(remaining: int, largest: int) -> int:
    """The rows of the next statement: the largest power of two that fits."""
    return 1 << (min(remaining, largest).bit_length() - 1)


def _plan(table: Table, keys: frozenset[str], dialect: Dialect) -> _Plan | None:
    plans = _plans.setdefault(dialect, {})
    if (table, keys) not in plans:
        plans[(table, keys)] = _make_plan(table, keys, dialect)
    return plans[(table, keys)]


def _make_plan(table: Table, keys: frozenset[str], dialect: Dialect) -> _Plan | None:
    """``None`` when a column's default is not a plain value or function (a sequence, a SQL expression):
    such a table goes through SQLAlchemy's own INSERT."""
    if dialect.paramstyle != "qmark":
        return None
    given: list[Column[Any]] = []
    defaulted: list[tuple[Column[Any], Callable[[], Any]]] = []
    for column in table.columns:
        if column.key in keys:
            given.append(column)
            continue
        default = column.default
        if default is None:
            continue  # NULL, or the server's default
        if getattr(default, "is_scalar", False):
            defaulted.append((column, _constant(default.arg)))  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            function = default.arg  # type: ignore[attr-defined]  # wrapped to take a context
            defaulted.append((column, lambda function=function: function(None)))
        else:
            return None
    columns = given + [column for column, _ in defaulted]
    processed = []
    for at, column in enumerate(columns):
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processed.append((at, process))
    getter = operator.itemgetter(*(column.key for column in given)) if given else (lambda _row: ())
    names = ", ".join(dialect.identifier_preparer.quote(column.name) for column in columns)
    return _Plan(
        given=getter if len(given) != 1 else (lambda row, get=getter: (get(row),)),
        defaults=tuple(default for _, default in defaulted),
        processed=tuple(processed),
        head=f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) VALUES ",
        group="(" + ", ".join("?" for _ in columns) + ")",
        largest=min(_LARGEST_CHUNK, _SQLITE_MAX_VARIABLES // len(columns)),
    )


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value
