"""When Python's cycle collector runs in the app: its thresholds while the app runs, and while replies stream.

The collector is process-wide, so is its policy: one ``COLLECTOR``, applied by the app when it starts and put
back when it ends, and raised by every worker that streams a reply for as long as it does.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Python collects its youngest generation after every 700 new objects. A frame of the UI makes tens of
# thousands (strips, segments, their caches) that live until the frame is drawn, so collections during it
# moved them into older generations and set off full collections of the app's 300,000-odd objects. In a
# 500-message conversation (tests/bench/bench_chat.py's history phase, UI thread CPU on a loaded 2-core
# machine) opening it took 0.6 s with Python's threshold and 0.32 s with this one, a page up 0.20 s
# (at most 0.45) against 0.17 (0.26). Objects freed by reference counting never wait for a collection;
# only objects caught in cycles wait a little longer, up to this many.
YOUNG_GENERATION_THRESHOLD = 100_000
# Paging through a long conversation lets go of the message views that left its window, about 8,500 objects a
# press, all in reference cycles (each Textual widget with its styles). With Python's ten young collections
# to one of the middle generation, that one freed up to a million of them at once: frames of 0.7-1.1 s among
# 136 page-ups of a 500-message conversation (bench_chat's history phase, quiet 2-core machine, two runs).
# With two, the worst frame was 0.44-0.45 s and the 90th percentile 27 ms against 34-39, for the same total
# time collecting.
MIDDLE_GENERATION_THRESHOLD = 2
# A collection holds the GIL, so the generation thread waits through it for its next token while llama.cpp's
# threads idle: a 128-token reply of SmolLM2 makes ~45,000 new objects and met one collection of 25-50 ms, up to
# 3% of its time. While a reply streams the youngest generation waits for this many (a reply of ~2,500 tokens);
# the collection it was due comes once the reply ends.
STREAMING_YOUNG_GENERATION_THRESHOLD = 1_000_000


class CollectorPolicy:
    """The app's collector thresholds, raised while any reply streams."""

    def __init__(self) -> None:
        self._python_thresholds = gc.get_threshold()
        self._lock = threading.Lock()
        self._applied = False
        self._streams = 0

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
        gc.set_threshold(young, MIDDLE_GENERATION_THRESHOLD, self._python_thresholds[2])


COLLECTOR = CollectorPolicy()
