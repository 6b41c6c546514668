"""`app.store.driver.fetch` on real Postgres: a statement run on the driver connection takes and returns
the values that `AsyncConnection.execute` does (NULLs, JSON, UTC timestamps, arrays, booleans, awkward
text, IN lists written into the statement), SQLAlchemy's cursor listeners see it, a driver error comes
out as SQLAlchemy's exception and leaves the connection usable, and what cannot be compiled once is
refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    event,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.store.database import Database
from app.store.driver import fetch
from app.store.sql import json_rows, to_json
from app.store.types import JSONType, UTCDateTime

pytestmark = pytest.mark.postgres

_META = MetaData()
_ROWS = Table(
    "driver_rows",
    _META,
    Column("id", BigInteger, primary_key=True),
    Column("name", String(64)),
    Column("body", Text, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("at", UTCDateTime(), nullable=True),
    Column("doc", JSONType, nullable=True),
    Column("tags", postgresql.ARRAY(String), nullable=True),
)
_COLUMNS = tuple(_ROWS.c)
# A read of rows by id (an array parameter), with a literal IN list and the processed types.
_BY_IDS = (
    select(*_COLUMNS, bindparam("echo_at", type_=UTCDateTime()), bindparam("echo_doc", type_=JSONType))
    .where(_ROWS.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger))))
    .where(_ROWS.c.name.in_(("a", "b", "c", "d")))
    .order_by(_ROWS.c.id)
)
# A write as a data-modifying CTE that reads its rows from a JSON parameter (as the hot statements do).
_NEW = json_rows("rows", *_COLUMNS)
_INSERTED = insert(_ROWS).from_select([c.name for c in _COLUMNS], select(*_NEW.c)).returning(*_COLUMNS)
_INSERT = select(*_INSERTED.cte("inserted").c)
_BY_NAMES = select(_ROWS.c.id).where(_ROWS.c.name.in_(bindparam("names", expanding=True)))

AT = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5)))
DOC = {"text": "café 中文 🎉 e\u0301 שלום", "null": None, "nested": [1, 2.5, {"x": True}], "quote": "'\"\\"}
ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "a", "body": "line\nbreak\ttab 'q' \"dq\" \\", "flag": True, "at": AT, "doc": DOC,
     "tags": ["x", "", "ü"]},
    {"id": 2, "name": "b", "body": None, "flag": None, "at": None, "doc": None, "tags": None},
    {"id": 3, "name": "c", "body": "", "flag": False, "at": AT.astimezone(UTC), "doc": [], "tags": []},
    {"id": 4, "name": "z", "body": "not in the IN list", "flag": False, "at": None, "doc": {}, "tags": None},
]  # fmt: skip


@pytest.fixture
async def db(fresh_pg: str) -> AsyncIterator[Database]:
    database = Database(fresh_pg)
    async with database.engine.begin() as connection:
        await connection.run_sync(_META.create_all)
    try:
        yield database
    finally:
        await database.dispose()


async def _fill(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(insert(_ROWS), ROWS)


async def _both(database: Database, params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """`_BY_IDS` through SQLAlchemy and through the driver connection, on one connection each."""
    async with database.autocommit_connection() as connection:
        through_sqlalchemy = [tuple(row) for row in await connection.execute(_BY_IDS, params)]
    async with database.autocommit_connection() as connection:
        direct = await fetch(connection, _BY_IDS, params)
    return through_sqlalchemy, direct


async def test_values_round_trip_as_through_sqlalchemy(db: Database) -> None:
    await _fill(db)
    params = {"ids": [1, 2, 3, 4, 99], "echo_at": AT, "echo_doc": DOC}
    through_sqlalchemy, direct = await _both(db, params)
    assert direct == through_sqlalchemy
    assert [row[0] for row in direct] == [1, 2, 3]  # 4 is not in the IN list written into the statement
    first, second, third = direct
    assert first[1:] == ("a", ROWS[0]["body"], True, AT, DOC, ["x", "", "ü"], AT, DOC)
    assert first[4].tzinfo is UTC and first[7].tzinfo is UTC  # timestamps come back in UTC
    assert second[2:7] == (None, None, None, None, None)  # SQL NULLs
    assert third[2:6] == ("", False, AT, []) and third[6] == []
    # A None JSON parameter (JSON null, as SQLAlchemy binds it) and a None timestamp.
    through_sqlalchemy, direct = await _both(db, params | {"echo_at": None, "echo_doc": None})
    assert direct == through_sqlalchemy and {row[7:] for row in direct} == {(None, None)}
    assert await _both(db, params | {"ids": []}) == ([], [])


async def test_a_data_modifying_statement_writes_and_returns_its_rows(db: Database) -> None:
    rows = [row | {"at": None if row["at"] is None else row["at"].astimezone(UTC)} for row in ROWS]
    async with db.autocommit_connection() as connection:
        returned = await fetch(connection, _INSERT, {"rows": to_json(rows)})
    assert sorted(returned) == [tuple(row.values()) for row in rows]
    async with db.autocommit_connection() as connection:  # committed: the statement ran in autocommit
        stored = [tuple(row) for row in await connection.execute(select(*_COLUMNS).order_by(_ROWS.c.id))]
    assert stored == [tuple(row.values()) for row in rows]


async def test_listeners_see_the_statement_and_errors_are_sqlalchemys(db: Database) -> None:
    await _fill(db)
    seen: list[tuple[str, Any, bool]] = []

    def before(conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, _many: bool) -> None:
        seen.append((statement.split()[0], parameters, conn.connection.driver_connection.autocommit))

    after: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    event.listen(db.engine.sync_engine, "after_cursor_execute", lambda *args: after.append(args[2]))
    async with db.autocommit_connection() as connection:
        await fetch(connection, _BY_IDS, {"ids": [1], "echo_at": AT, "echo_doc": DOC})
        duplicate = to_json([ROWS[0] | {"at": AT.astimezone(UTC)}])
        with pytest.raises(IntegrityError):  # SQLAlchemy's class, wrapping psycopg's
            await fetch(connection, _INSERT, {"rows": duplicate})
        # The connection is still usable (autocommit: no transaction left aborted).
        assert await fetch(connection, _BY_IDS, {"ids": [2], "echo_at": None, "echo_doc": None})
    assert [(verb, auto) for verb, _, auto in seen] == [("SELECT", True), ("WITH", True), ("SELECT", True)]
    assert seen[0][0] == "SELECT" and [1] in seen[0][1] and AT in seen[0][1]  # as sent: `$n` and values
    assert len(after) == 2  # the failed statement has no `after`


async def test_what_cannot_be_compiled_once_is_refused(db: Database) -> None:
    async with db.autocommit_connection() as connection:
        with pytest.raises(ValueError, match="rendered per execution"):
            await fetch(connection, _BY_NAMES, {"names": ["a"]})
        with pytest.raises(KeyError, match="ids"):
            await fetch(connection, _BY_IDS, {"echo_at": None, "echo_doc": None})
        with pytest.raises(ValueError, match="naive datetime"):  # `UTCDateTime`'s own check
            await fetch(connection, _BY_IDS, {"ids": [1], "echo_at": datetime(2024, 1, 1), "echo_doc": None})


async def test_a_statement_is_compiled_once(db: Database) -> None:
    """Once, into `$n` placeholders: a name used twice is one parameter, a literal percent sign stays."""
    n = bindparam("n", type_=BigInteger)
    statement = select(cast(n, Text), literal("x"), literal_column("'100%'"), n + n)
    compiled: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: compiled.append(args[2]))
    async with db.autocommit_connection() as connection:
        assert isinstance(connection, AsyncConnection)
        results = [await fetch(connection, statement, {"n": n}) for n in range(3)]
    assert results == [[("0", "x", "100%", 0)], [("1", "x", "100%", 2)], [("2", "x", "100%", 4)]]
    assert len(set(map(id, compiled))) == 1  # the same SQL string object each time
