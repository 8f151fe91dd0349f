"""When Python's cycle collector runs in the app: its thresholds while the app runs and while replies stream,
and the full collections it makes when the user pauses.

The collector is process-wide, so is its policy: one ``COLLECTOR``, applied by the app when it starts and put
back when it ends, raised by every worker that streams a reply for as long as it does, and told of every key
and mouse event by the app, whose timer asks it to collect when idle.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A young collection walks the objects made since the last one that are still alive, a middle one those of the
# last ten young ones, and a full one the whole heap: in a 500-message conversation about 235,000 objects, 0.2-0.3 s
# of the UI thread on a loaded 2-core machine, whatever it finds. Python starts a full one after ten middle ones
# once a quarter of the heap is new since the last, which paging through that conversation reached every few
# pages. Full collections therefore wait for the user to pause (``collect_when_idle``), and the young and middle
# ones keep Python's cadence, short enough not to show: 2,000 new objects (not 700: a frame makes that many).
# Once Textual's cycles are broken (tui/widgets/textual_fixes.py) little is left for any collection to free.
# tests/bench/bench_chat.py's history phase, 136 page-ups of a 500-message conversation, from key to the first
# frame drawn: at most 61-95 ms (32-47 median, three runs) against 255 ms (33) with the thresholds before,
# 100,000 and 2, and Python's full collections.
YOUNG_GENERATION_THRESHOLD = 2_000
MIDDLE_GENERATION_THRESHOLD = 10
OLD_GENERATION_THRESHOLD = 1_000
"""Middle collections after which a full one runs even while the user is busy, so that what is caught in cycles
waits no longer: about 900 page-ups in a row without a pause, which leave ~1,500 such objects each."""
IDLE_SECONDS = 1.0
"""How long after the last key or mouse event the user counts as paused (and the app as idle)."""
FULL_COLLECTION_DUE = 10
"""Middle collections since the last full one after which the next pause collects the whole heap: Python's
own cadence."""
# A collection holds the GIL, so the generation thread waits through it for its next token while llama.cpp's
# threads idle: a 128-token reply of SmolLM2 makes ~45,000 new objects and met one collection of 25-50 ms, up to
# 3% of its time. While a reply streams the youngest generation waits for this many (a reply of ~2,500 tokens);
# the collection it was due comes once the reply ends.
STREAMING_YOUNG_GENERATION_THRESHOLD = 1_000_000


class CollectorPolicy:
    """The app's collector thresholds, raised while any reply streams, and its full collections, made when the
    user pauses."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._python_thresholds = gc.get_threshold()
        self._lock = threading.Lock()
        self._applied = False
        self._streams = 0
        self._clock = clock
        self._last_input = clock()

    def note_input(self) -> None:
        """The user pressed a key or used the mouse."""
        self._last_input = self._clock()

    def collect_when_idle(self) -> bool:
        """Collect the whole heap if one is due, the user has paused and no reply streams; whether it did."""
        with self._lock:
            idle = self._applied and not self._streams and self._clock() - self._last_input >= IDLE_SECONDS
        if not idle or gc.get_count()[2] < FULL_COLLECTION_DUE:
            return False
        gc.collect()
        return True

    def apply(self) -> None:
        """The app's thresholds (the app starts; Python's are kept unless they already are)."""
        with self._lock:
            if not self._applied:
                self._python_thresholds = gc.get_threshold()
            self._applied = True
            self._set()

    def restore(self) -> None:
        """Python's thresholds as they were before ``apply`` (the app ends)."""
        with self._lock:
            self._applied = False
            gc.set_threshold(*self._python_thresholds)

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Collections wait while the block streams a reply (blocks in several threads may overlap)."""
        with self._lock:
            self._streams += 1
            self._set()
        try:
            yield
        finally:
            with self._lock:
                self._streams -= 1
                self._set()

    def _set(self) -> None:
        if not self._applied:
            return
        young = STREAMING_YOUNG_GENERATION_THRESHOLD if self._streams else YOUNG_GENERATION_THRESHOLD
        gc.set_threshold(young, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD)


COLLECTOR = CollectorPolicy()
