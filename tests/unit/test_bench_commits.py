"""bench.commits: transactions per application from log_statement lines."""

from __future__ import annotations

from bench.commits import count


def test_explicit_transactions_count_once_and_single_statements_each() -> None:
    usage = count(
        [
            "postwire-policy|12| LOG:  execute __asyncpg_stmt_1__: SELECT DISTINCT address FROM suppressions",
            "postwire-submission|13| LOG:  statement: BEGIN;",
            "postwire-policy|12| LOG:  execute __asyncpg_stmt_1__: SELECT DISTINCT address FROM suppressions",
            "postwire-submission|13| LOG:  execute __asyncpg_stmt_2__: INSERT INTO messages (id) VALUES ($1)",
            "postwire-submission|13| LOG:  execute __asyncpg_stmt_3__: INSERT INTO recipients (id) VALUES ($1)",
            "postwire-submission|13| LOG:  statement: COMMIT;",
            "postwire-submission|13| DETAIL:  parameters: $1 = '42'",
        ]
    )
    assert (usage["postwire-policy"].transactions, usage["postwire-policy"].statements) == (2, 2)
    assert (usage["postwire-submission"].transactions, usage["postwire-submission"].statements) == (1, 4)
    assert dict(usage["postwire-submission"].explicit) == {"INSERT messages + INSERT recipients": 1}


def test_an_entry_glued_to_the_end_of_a_long_one_is_still_counted() -> None:
    usage = count(
        [
            "postwire-router|7| LOG:  statement: BEGIN",
            "…\\x54686520717569636b0d0apostwire-router|7| LOG:  statement: COMMIT",
        ]
    )
    assert usage["postwire-router"].transactions == 1
    assert set(usage) == {"postwire-router"}
