"""What the pipeline statements run on: a connection (inside the caller's transaction) or a pool
(a single statement, its own transaction)."""

from __future__ import annotations

import asyncpg
import asyncpg.pool

__all__ = ["Db", "Tx"]

# A connection the caller holds, usually inside its transaction.
Tx = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
# Where a single statement may run on its own.
Db = Tx | asyncpg.Pool
