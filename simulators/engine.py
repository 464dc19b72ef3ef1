"""The fleet's clock and event queue: one heap of (time, sequence, kind, index), run in order.

Time is integer seconds since the Unix epoch. Equal times keep the order they were pushed in,
so a seed gives the same run, event for event, at any speed. An event is a kind (which handler
runs) and an index (the vehicle or station it is about).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from simulators.config import FleetConfig, FleetStats

# The kinds of event; each indexes the handler table, so they are small consecutive integers.
TRIP_START, DRIVE_STEP, STATION_TICK, STATUS, TRUTH, RESUME, WAIT_TIMEOUT = range(7)
PLAN_DAY, REJECTION_RETRY, END = 7, 8, 9
EVENT_KINDS = 10

Handler = Callable[[int], None]
Event = tuple[int, int, int, int]


class Engine:
    def __init__(self, config: FleetConfig, stats: FleetStats) -> None:
        self.stats = stats
        self.start = int(config.start.timestamp())
        self.end = self.start + int(config.days * 86_400)
        self.now = self.start
        # Bound once by the hot paths, which push without a method call: never rebound.
        self.heap: list[Event] = []
        self.next_seq = itertools.count(1).__next__
        self.offset_s = int(config.utc_offset_h * 3600)
        minute = 2.0 * math.pi / 1440.0
        # The ambient temperature of each minute of the local day.
        self.ambient = [
            config.ambient_mean_c + config.ambient_swing_c * math.cos(minute * (m - 15 * 60))
            for m in range(1440)
        ]
        # Many records of one event share its instant: format it once (ts_t, ts_s).
        self.ts_t = -1
        self.ts_s = ""
        self._day_prefix_day = -1
        self._day_prefix = ""
        self._handlers: list[Handler | None] = [None] * EVENT_KINDS

    def on(self, kind: int, handler: Handler) -> None:
        self._handlers[kind] = handler

    def push(self, t: int, kind: int, index: int) -> None:
        heapq.heappush(self.heap, (t, self.next_seq(), kind, index))

    # ---- time --------------------------------------------------------------------------------

    def local_day_start(self, t: int) -> int:
        local = t + self.offset_s
        return local - local % 86_400 - self.offset_s

    def ambient_c(self, t: int) -> float:
        return self.ambient[((t + self.offset_s) // 60) % 1440]

    def ts(self, t: int) -> str:
        if t == self.ts_t:
            return self.ts_s
        self.ts_t = t
        self.ts_s = self._format_ts(t)
        return self.ts_s

    def _format_ts(self, t: int) -> str:
        day = t // 86_400
        if day != self._day_prefix_day:
            self._day_prefix_day = day
            self._day_prefix = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%dT")
        return self._day_prefix + _clock(t - day * 86_400)

    # ---- running -----------------------------------------------------------------------------

    def run(
        self,
        *,
        speed: float | None = None,
        flat_out_until: float | None = None,
        progress: Callable[[FleetStats], None] | None = None,
        progress_interval_s: float = 0.25,
        should_stop: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> FleetStats:
        """Run to the end; speed is simulated seconds per wall second (None: flat out).

        Paced, the events before `flat_out_until` (a backfill of history) run flat out first,
        and the run never gets ahead of the real clock: a backend refuses records from the
        future, so once it has caught up with the present it goes on in real time. `clock()` is
        that present (epoch seconds): the backend's clock, which tests shift."""
        handlers = self._handler_table()
        wall_start = time.monotonic()
        last_progress = wall_start
        heap = self.heap
        stats = self.stats
        pop = heapq.heappop
        if speed is None:
            self._run_flat_out(handlers, progress, progress_interval_s, should_stop)
        else:
            paced_from: float = self.start
            ended = False
            if flat_out_until is not None and flat_out_until > self.start:
                ended = self._run_flat_out(
                    handlers, progress, progress_interval_s, should_stop, until=flat_out_until
                )
                paced_from = flat_out_until
                wall_start = time.monotonic()
            while heap and not ended:
                t, _, kind, index = heap[0]
                delay = max(wall_start + (t - paced_from) / speed - time.monotonic(), t - clock())
                if delay > 0:
                    time.sleep(min(delay, progress_interval_s))
                    if progress is not None:
                        stats.sim_time = self.now
                        progress(stats)
                    if should_stop is not None and should_stop():
                        break
                    continue
                pop(heap)
                self.now = t
                handlers[kind](index)
                stats.events += 1
                if kind == END:
                    break
                if not stats.events & 1023:
                    wall = time.monotonic()
                    if wall - last_progress >= progress_interval_s:
                        last_progress = wall
                        stats.sim_time = t
                        if progress is not None:
                            progress(stats)
                        if should_stop is not None and should_stop():
                            break
        stats.sim_time = self.now
        if progress is not None:
            progress(stats)
        return stats

    def _handler_table(self) -> tuple[Handler, ...]:
        missing = [kind for kind, handler in enumerate(self._handlers) if handler is None]
        if missing:
            raise RuntimeError(f"no handler for event kinds {missing}")
        return tuple(h for h in self._handlers if h is not None)

    def _run_flat_out(
        self,
        handlers: tuple[Handler, ...],
        progress: Callable[[FleetStats], None] | None,
        progress_interval_s: float,
        should_stop: Callable[[], bool] | None,
        until: float = math.inf,
    ) -> bool:
        """The event loop of run() without pacing: the same events in the same order; events
        at or after `until` stay queued. True when the run ended (or was told to stop)."""
        heap = self.heap
        stats = self.stats
        pop = heapq.heappop
        last_progress = time.monotonic()
        events = stats.events
        try:
            while heap and heap[0][0] < until:
                t, _, kind, index = pop(heap)
                self.now = t
                handlers[kind](index)
                events += 1
                if kind == END:
                    return True
                if not events & 1023:
                    wall = time.monotonic()
                    if wall - last_progress >= progress_interval_s:
                        last_progress = wall
                        stats.events = events
                        stats.sim_time = t
                        if progress is not None:
                            progress(stats)
                        if should_stop is not None and should_stop():
                            return True
        finally:
            stats.events = events
        return not heap


_CLOCK: list[str] = []


def _clock(s: int) -> str:
    """`HH:MM:SSZ` of a second of the day, from a table built on first use."""
    if not _CLOCK:
        _CLOCK.extend(
            f"{h:02d}:{m:02d}:{sec:02d}Z" for h in range(24) for m in range(60) for sec in range(60)
        )
    return _CLOCK[s]
