"""The async unit of work (app/core/db.py TransactionStatements) on the real database: a
request whose statement failed gives its connection back to the pool clean, without the
pool's "rolling back returned connection" warning (its text, "[INERROR]", read as an error
in `swapfleet up`'s log)."""

import asyncio
import logging

import pytest
from sqlalchemy.exc import DBAPIError

from app.core.db import Prepared, TransactionStatements, close_async_pool

ONE_BY = Prepared("SELECT 1 / %(divisor)s::int AS quotient", ("quotient",))


def test_a_failed_transaction_is_rolled_back_before_its_connection_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail_then_reuse() -> tuple[str, list[dict[str, object]]]:
        try:
            failed = TransactionStatements()
            with pytest.raises(DBAPIError):
                await failed.rows(ONE_BY, {"divisor": 0})
            await failed.close()
            # The pool holds one connection here: the next unit of work gets the same one.
            reused = TransactionStatements()
            rows = await reused.rows(Prepared("SELECT txid_current_if_assigned() AS x", ("x",)), {})
            status = str(reused._connection.info.transaction_status.name)  # noqa: SLF001
            await reused.close()
            return status, rows
        finally:
            await close_async_pool()

    with caplog.at_level(logging.WARNING):
        status, rows = asyncio.run(fail_then_reuse())
    assert status == "INTRANS"  # a fresh transaction, not the aborted one
    assert rows == [{"x": None}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warnings if "rolling back" in m or "INERROR" in m], warnings
