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

Rows are tuples of values for ``Columns`` (``insert_values``), or dicts as ``insert(table)`` takes them
(``insert_rows``, for the few callers that have dicts). A column left out gets its Python default exactly
as SQLAlchemy would give it (scalar or zero-argument callable), or NULL / the server's default when it has
none. Values pass through each column type's own bind processor, so what is stored is what the ORM would
store.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Column, Connection, Executable, Table, bindparam, insert
from sqlalchemy.engine import Dialect

__all__ = ["Columns", "ListedStatement", "columns", "in_lists", "insert_rows", "insert_values"]

# Rows per statement at most (fewer where the variable limit says so); each statement holds a power of
# two of them (``_chunk_size``).
_LARGEST_CHUNK = 512
_SQLITE_MAX_VARIABLES = 32_766  # SQLITE_MAX_VARIABLE_NUMBER since SQLite 3.32
_LARGEST_IN_LIST = 512  # values per IN (...) list, well below every backend's limit on bound parameters
T = TypeVar("T")


class Columns:
    """Which columns of a table a row's values fill, in order: the shape of rows stored as tuples.

    Rows of the push path are tuples rather than dicts: a dict per row cost the event loop its building and
    pickling, and the journal its unpickling and reading back by key, about 4 µs per push in all (when a
    push had three rows). One object stands for each shape (``columns``), compared by identity, so a
    batch's rows are grouped with one dict lookup each and a pickled batch carries the names once."""

    __slots__ = ("table", "names")

    def __init__(self, table: str, names: tuple[str, ...]) -> None:
        self.table = table  # the table's name: rows cross to the journal process pickled
        self.names = names

    def __repr__(self) -> str:
        return f"Columns({self.table!r}, {self.names!r})"


_shapes: dict[tuple[str, tuple[str, ...]], Columns] = {}


def columns(table: str, names: Sequence[str]) -> Columns:
    """The one ``Columns`` of ``table`` and ``names`` in this process."""
    key = (table, tuple(names))
    found = _shapes.get(key)
    if found is None:
        found = _shapes[key] = Columns(*key)
    return found


@dataclass(frozen=True, slots=True)
class _Plan:
    """How rows of one ``Columns`` go into their table: the given columns' bind processors, the defaults of
    the columns left out, and the SQL per chunk size. A chunk's values are worked column by column (its
    rows transposed, each processed column mapped, the defaults repeated, then flattened), so the only
    Python run per value is a processor's."""

    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # position among the given -> bind processor
    filled: tuple[Callable[[int], Iterable[Any]], ...]  # per column left out: n -> its n default values
    head: str  # INSERT INTO t (a, b) VALUES
    group: str  # (?, ?)
    largest: int

    def sql(self, rows: int) -> str:
        return self.head + ", ".join([self.group] * rows)

    def values(self, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The chunk's parameters, row after row."""
        if not self.processed and not self.filled:
            return list(chain.from_iterable(rows))
        by_column: list[Iterable[Any]] = list(zip(*rows, strict=True))
        for at, process in self.processed:
            by_column[at] = map(process, by_column[at])
        by_column += [fill(len(rows)) for fill in self.filled]
        return list(chain.from_iterable(zip(*by_column, strict=True)))


# Per dialect object (its processors belong to it, e.g. the engine's JSON serializer), gone with its engine.
_plans: weakref.WeakKeyDictionary[Dialect, dict[tuple[Table, tuple[str, ...]], _Plan | None]] = (
    weakref.WeakKeyDictionary()
)


def insert_values(
    connection: Connection, table: Table, names: tuple[str, ...], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows``, each the values of the columns ``names`` in that order, into ``table`` within
    ``connection``'s transaction."""
    if not rows:
        return
    dialect = connection.dialect
    plan = _plan(table, names, dialect) if dialect.name == "sqlite" else None
    if plan is None:
        connection.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])
        return
    start = 0
    while start < len(rows):
        chunk = rows[start : start + _chunk_size(len(rows) - start, plan.largest)]
        start += len(chunk)
        connection.exec_driver_sql(plan.sql(len(chunk)), tuple(plan.values(chunk)))


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``insert_values`` for rows given as dicts, all with the same keys."""
    if not rows:
        return
    names = tuple(rows[0])
    insert_values(connection, table, names, [tuple([row[name] for name in names]) for row in rows])


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


def _plan(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Plan | None:
    plans = _plans.setdefault(dialect, {})
    if (table, names) not in plans:
        plans[(table, names)] = _make_plan(table, names, dialect)
    return plans[(table, names)]


def _make_plan(table: Table, names: tuple[str, ...], dialect: Dialect) -> _Plan | None:
    """``None`` when a column's default is not a plain value or function (a sequence, a SQL expression):
    such a table goes through SQLAlchemy's own INSERT."""
    if dialect.paramstyle != "qmark":
        return None

    def processor(column: Column[Any]) -> Callable[[Any], Any] | None:
        return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]

    given = [table.columns[name] for name in names]
    left_out: list[Column[Any]] = []
    filled: list[Callable[[int], Iterable[Any]]] = []
    for column in table.columns:
        if column.key in names:
            continue
        default = column.default
        if default is None:
            continue  # NULL, or the server's default
        process = processor(column) or _unchanged
        if getattr(default, "is_scalar", False):
            filled.append(_constant(process(default.arg)))  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            filled.append(_made(default.arg, process))  # type: ignore[attr-defined]
        else:
            return None
        left_out.append(column)
    processed = tuple(
        (at, process) for at, column in enumerate(given) if (process := processor(column)) is not None
    )
    written = given + left_out
    quoted = ", ".join(dialect.identifier_preparer.quote(column.name) for column in written)
    return _Plan(
        processed=processed,
        filled=tuple(filled),
        head=f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({quoted}) VALUES ",
        group="(" + ", ".join("?" for _ in written) + ")",
        largest=min(_LARGEST_CHUNK, _SQLITE_MAX_VARIABLES // len(written)),
    )


def _unchanged(value: Any) -> Any:
    return value


def _constant(value: Any) -> Callable[[int], Iterable[Any]]:
    """A scalar default, processed once: the same value for every row."""
    return lambda rows: repeat(value, rows)


def _made(function: Callable[[Any], Any], process: Callable[[Any], Any]) -> Callable[[int], Iterable[Any]]:
    """A callable default (SQLAlchemy wraps it to take a context, unused here), called for each row."""
    return lambda rows: [process(function(None)) for _ in range(rows)]
