"""What the pipeline statements run on: a connection (inside the caller's transaction) or a pool
(a single statement, its own transaction)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import asyncpg.pool

__all__ = ["Db", "Tx", "insert_of_stored", "unnest_arrays", "unnest_from"]

# A connection the caller holds, usually inside its transaction.
Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# Where a single statement may run on its own.
Db = Tx | asyncpg.Pool


def unnest_arrays(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as one list per column: the array parameters of an INSERT … SELECT FROM unnest()."""
    return [[row[i] for row in rows] for i in range(width)]


def unnest_from(first: int, alias: str, columns: Sequence[tuple[str, str]]) -> str:
    """`unnest($first::type[], …) AS alias(name, …)` for the (name, type) columns, in order."""
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(columns))
    return f"unnest({arrays}) AS {alias}({', '.join(name for name, _ in columns)})"


def insert_of_stored(
    table: str, first: int, columns: Sequence[tuple[str, str]], stored: str, *, suffix: str = ""
) -> str:
    """An INSERT, for a WITH clause, of rows given as arrays ${first}… (one per (name, type) column,
    message_id among them), only those of the messages whose id the WITH query `stored` returned;
    message_id is stored only when the table has such a column (its first)."""
    names = [name for name, _ in columns if name != "message_id" or columns[0][0] == "message_id"]
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(f'k.{n}' for n in names)}"
        f" FROM {unnest_from(first, 'k', columns)} WHERE k.message_id IN (SELECT id FROM {stored}){suffix}"
    )
