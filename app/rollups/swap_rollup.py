"""The swap roll-up as a background thread of each API process.

Swaps queue themselves (swap_rollup_queue) and leave the aggregates to this thread, which adds
what committed every `swap_rollup_interval_s` in one transaction: the per-OEM counters are
updated once a batch instead of once a swap, by one process at a time (roll_up_swaps takes an
advisory lock and the others skip that turn). Readers of the OEM swap counts add what is
still queued; battery_daily's swap columns lag by at most about one interval.
"""

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from app.core.db import get_engine
from app.rollups.swaps import roll_up_swaps

log = logging.getLogger(__name__)


class SwapRollup:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swap-rollup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                with get_engine().begin() as conn:
                    added = roll_up_swaps(conn)
            except SQLAlchemyError as exc:
                # Nothing is lost: the failed transaction left the swaps queued for the next turn.
                log.warning("event=swap_rollup_failed error=%s", type(exc).__name__)
                continue
            if added:
                log.debug("event=swap_rollup swaps=%d", added)
