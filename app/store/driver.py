"""Hot statements on the pooled connection's psycopg connection, past SQLAlchemy's execution path
(Postgres only).

`AsyncConnection.execute` runs every statement in a greenlet (the async adaptation), looks its
compiled form up by cache key, builds an execution context, a cursor adapter and a `CursorResult`,
and `Row`s: ~100–200 Python calls a statement besides what psycopg does, on statements that run once
or twice a chunk (docs/results/benchmarks.md (r)). `fetch` runs a Core statement on the same pooled
connection's driver connection (`psycopg.AsyncConnection`) instead: the statement is compiled once,
by the connection's dialect, into PostgreSQL's own `$n` placeholders (psycopg's `AsyncRawCursor` sends
it as it is; its plain cursor would parse `%(name)s` on every execution), with SQLAlchemy's bind and
result processors of its types (JSON,
`UTCDateTime`, arrays, …) taken from that compilation and applied to the values, so parameters and
rows are what `execute` would send and return (as plain tuples). The connection keeps its pool, its
checkout checks and its isolation level (the caller's `Database.autocommit_connection`); the
engine's `before_cursor_execute`/`after_cursor_execute` listeners see each statement (with no
execution context, as for SQLAlchemy's own `_cursor_execute`), and a driver error goes through
SQLAlchemy's handling (the same exception classes, a lost connection invalidated).

Only for SELECTs (also with data-modifying CTEs) whose parameters are plain binds: a statement that
needs rendering at execution (`expanding` IN lists, literal binds) is refused when first compiled.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncRawCursor
from sqlalchemy import Select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

_Processor = Callable[[Any], Any] | None
# A bind as SQLAlchemy renders it for psycopg (`%(name)s`), or a literal percent sign (`%%`).
_PYFORMAT = re.compile(r"%\((\w+)\)s|%%")


@dataclass(frozen=True)
class _Bind:
    name: str  # as rendered in the SQL (`%(name)s`)
    key: str  # as the caller names it
    required: bool
    default: Any  # when not required and not given (a literal in the statement), processed
    process: _Processor


class _Compiled:
    """A statement compiled once for one dialect: its SQL, its parameters and their processors, and
    its result columns' processors (known once the first result names the columns' types)."""

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.positional or compiled.escaped_bind_names:
            raise ValueError("only named binds that need no escaping run on the driver connection")
        rendered = compiled.post_compile_params | compiled.literal_execute_params
        if any(bind.required for bind in rendered):
            raise ValueError("a statement rendered per execution cannot run on the driver connection")
        self.sql = compiled.string
        # One parameter per rendered name; of binds that share a name, the last one with a processor
        # processes it (as `SQLCompiler._bind_processors` does).
        binds: dict[str, _Bind] = {}
        for bind, name in compiled.bind_names.items():
            if bind in rendered:
                continue
            process: _Processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is None and name in binds:
                process = binds[name].process
            default = None if bind.required else _processed(bind.effective_value, process)
            binds[name] = _Bind(name, bind.key, bind.required, default, process)
        if rendered:
            # IN lists written into the statement (`.in_(STATUSES)`): rendered once, as SQLAlchemy
            # renders them on every execution (a parameter per value), the others left as they are.
            given = {bind.key: None for bind in compiled.bind_names if bind.required}
            expanded = compiled._process_parameters_for_postcompile(compiled.construct_params(given))
            self.sql = expanded.statement
            for names in expanded.parameter_expansion.values():
                for name in names:
                    process = expanded.processors.get(name)
                    value = _processed(expanded.parameters[name], process)
                    binds[name] = _Bind(name, name, False, value, process)
        # PostgreSQL's own placeholders ($1, $2, …, one per name) for psycopg's `AsyncRawCursor`, which
        # sends the SQL as it is: psycopg's cursor parses `%(name)s` on every execution, and caches the
        # result only up to 4,096 bytes (the commit's statement is longer).
        numbers: dict[str, int] = {}

        def placeholder(match: re.Match[str]) -> str:
            return "%" if match[0] == "%%" else f"${numbers.setdefault(match[1], len(numbers) + 1)}"

        self.sql = _PYFORMAT.sub(placeholder, self.sql)
        self.binds = tuple(binds[name] for name in numbers)  # in their numbers' order
        # The rendered result columns, in order (what SQLAlchemy's `CursorResult` is keyed on).
        self._types = [column.type for column in compiled._result_columns]
        self._dialect = dialect
        self.results: tuple[_Processor, ...] | None = None
        self.processed: tuple[int, ...] = ()

    def parameters(self, given: Mapping[str, Any]) -> list[Any]:
        """The values of `$1`, `$2`, … for the caller's parameters `given`."""
        out = []
        for bind in self.binds:
            if bind.key in given:
                value = given[bind.key]
                out.append(value if bind.process is None else bind.process(value))
            elif bind.required:
                raise KeyError(f"no value for the statement's parameter {bind.key!r}")
            else:
                out.append(bind.default)
        return out

    def set_results(self, type_codes: Sequence[Any]) -> None:
        """The result columns' processors, for the column types the server reported."""
        if len(type_codes) != len(self._types):
            raise ValueError(f"{len(type_codes)} columns returned, {len(self._types)} compiled")
        self.results = tuple(
            type_.dialect_impl(self._dialect).result_processor(self._dialect, code)
            for type_, code in zip(self._types, type_codes, strict=True)
        )
        self.processed = tuple(n for n, process in enumerate(self.results) if process is not None)

    def row(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self.processed:
            return values
        assert self.results is not None
        out = list(values)
        for n in self.processed:
            out[n] = self.results[n](out[n])  # type: ignore[misc]  # `processed` lists processors only
        return tuple(out)


def _processed(value: Any, process: _Processor) -> Any:
    return value if process is None else process(value)


# Compiled forms by dialect (one per engine) and statement: each statement is compiled once.
_COMPILED: weakref.WeakKeyDictionary[Dialect, dict[Select[*tuple[Any, ...]], _Compiled]] = (
    weakref.WeakKeyDictionary()
)


def _compiled(statement: Select[*tuple[Any, ...]], dialect: Dialect) -> _Compiled:
    forms = _COMPILED.setdefault(dialect, {})
    form = forms.get(statement)
    if form is None:
        form = forms[statement] = _Compiled(statement, dialect)
    return form


async def fetch(
    db: AsyncConnection, statement: Select[*tuple[Any, ...]], params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """Run `statement` (built once, at module level: its compiled form is kept for it) with `params`
    on `db`'s driver connection; its rows as tuples, processed as `db.execute` would."""
    sync = db.sync_connection
    assert sync is not None  # started by `async with`
    form = _compiled(statement, sync.dialect)
    sql, values = form.sql, form.parameters(params)
    events = sync._has_events or sync.engine._has_events
    driver = sync.connection.driver_connection
    assert driver is not None
    cursor = AsyncRawCursor(driver)
    try:
        if events:
            for listener in sync.dispatch.before_cursor_execute:
                sql, values = listener(sync, cursor, sql, values, None, False)
        await cursor.execute(sql, values)
        rows = await cursor.fetchall()  # a SELECT: rows, maybe none
        if form.results is None:
            # psycopg builds `description` anew on each access (a `Column` per column): read once.
            assert cursor.description is not None
            form.set_results([column.type_code for column in cursor.description])
        if events:
            sync.dispatch.after_cursor_execute(sync, cursor, sql, values, None, False)
    except sync.dialect.loaded_dbapi.Error as error:
        await db.run_sync(_handle_error, error, sql, values)
        raise  # not reached: `_handle_error` raises
    finally:
        await cursor.close()
    return [form.row(row) for row in rows]


def _handle_error(sync: Connection, error: Exception, sql: str, values: Sequence[Any]) -> None:
    """SQLAlchemy's handling of a driver error (its exception classes, and a lost connection
    invalidated so that the pool replaces it); raises."""
    sync._handle_dbapi_exception(error, sql, values, None, None)
