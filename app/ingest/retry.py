"""Writing a batch until it is stored: retried while the database is unreachable, split
message by message when it refuses the batch, and a message it refuses stored as a dead
letter in its place.
"""

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import psycopg

from app.ingest.payloads import DecodedMessage
from app.ingest.writer import BatchWriter, Turn, TurnTimeout, WriteResult

log = logging.getLogger(__name__)


def write_with_retry(
    writer: BatchWriter,
    messages: Sequence[DecodedMessage],
    *,
    retry_max_s: float,
    stopping: Callable[[], bool],
    on_retry: Callable[[], None] | None = None,
    turn: Turn | None = None,
) -> WriteResult | None:
    """Retries forever while the database is unreachable: nothing is acknowledged meanwhile,
    so the broker keeps the backlog. A batch the database refuses for another reason is
    split so one poisonous message cannot block the stream; that message is dead-lettered.
    Returns None only if asked to stop before the batch was written."""
    delay = 0.1
    refusals = 0
    while True:
        try:
            return writer.write(messages, turn)
        except (psycopg.OperationalError, TurnTimeout) as exc:
            if stopping():
                return None
            if on_retry is not None:
                on_retry()
            log.warning("event=write_retry error=%s delay_s=%.1f", type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, retry_max_s)
        except Exception as exc:
            # Anything else is taken as the fault of a message in the batch: a refusal by the
            # database (a value out of a column's range) or an error in Python on the way
            # there (OverflowError in binary COPY, a recursion limit in a JSON encoder). Left
            # to propagate, it would end the writer, and the broker would hand the same
            # message back forever.
            if len(messages) == 1:
                if refusals == 2:
                    raise
                refusals += 1
                messages = [_unwritable(messages[0], exc, writer.dead_letter_limit)]
                continue
            log.error("event=batch_refused error=%s; writing message by message", exc)
            merged = WriteResult()
            last = len(messages) - 1
            for i, message in enumerate(messages):
                # The next batch inserts only once this batch's last message has: were it to
                # insert ahead of the later ones, one of them could wait in PostgreSQL for
                # a key the next batch holds while the next batch waits for this one's
                # commit (until TurnTimeout).
                with turn.withheld() if turn is not None and i < last else nullcontext():
                    single = write_with_retry(
                        writer,
                        [message],
                        retry_max_s=retry_max_s,
                        stopping=stopping,
                        on_retry=on_retry,
                        turn=turn,
                    )
                if single is None:
                    return None
                merged.merge(single)
            return merged


def _unwritable(message: DecodedMessage, exc: Exception, limit: int) -> DecodedMessage:
    """The message's dead letter in its place; if even that was refused, a bare one."""
    log.error(
        "event=message_unwritable topic=%s error=%s: %s",
        message.topic,
        type(exc).__name__,
        str(exc)[:200],
    )
    refused = DecodedMessage(message.topic, message.identity, message.payload, message.received_at)
    if message.records or not message.dead_letters:
        refused.dead_letter("store_error", f"{type(exc).__name__}: {exc}", limit=limit)
    else:
        # Its dead letter was what could not be written: keep the fact and the topic, which
        # the broker accepted, without the payload or the text of the error.
        refused.payload = b""
        refused.dead_letter("store_error", type(exc).__name__, limit=0)
    return refused
