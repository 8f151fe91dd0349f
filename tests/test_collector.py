"""The app's cycle-collector policy: its thresholds while it runs, raised while replies stream, and its full
collections, made when the user pauses."""

import gc
import threading
import weakref

import pytest

from tui.collector import (
    FULL_COLLECTION_DUE,
    IDLE_SECONDS,
    MIDDLE_GENERATION_THRESHOLD,
    OLD_GENERATION_THRESHOLD,
    STREAMING_YOUNG_GENERATION_THRESHOLD,
    YOUNG_GENERATION_THRESHOLD,
    CollectorPolicy,
)


@pytest.fixture
def python_thresholds():
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_streams_raise_the_young_threshold_until_the_last_one_ends(python_thresholds):
    policy = CollectorPolicy()
    policy.apply()
    policy.apply()  # a second app in the process before the first ended: Python's are still the ones kept
    app = (YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD)
    streaming = (STREAMING_YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD)
    assert gc.get_threshold() == app
    with policy.streaming():
        assert gc.get_threshold() == streaming
        with policy.streaming():  # the arena's second model, or another tab
            pass
        assert gc.get_threshold() == streaming, "one reply still streams"
    assert gc.get_threshold() == app
    policy.restore()
    assert gc.get_threshold() == python_thresholds


def test_a_failed_reply_ends_its_stream(python_thresholds):
    policy = CollectorPolicy()
    policy.apply()
    with pytest.raises(RuntimeError), policy.streaming():
        raise RuntimeError("the engine failed")
    assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    policy.restore()


def test_a_reply_that_ends_after_the_app_leaves_python_s_thresholds(python_thresholds):
    policy = CollectorPolicy()
    policy.apply()
    started, quit_ = threading.Event(), threading.Event()

    def reply() -> None:
        with policy.streaming():
            started.set()
            quit_.wait(5)

    worker = threading.Thread(target=reply)
    worker.start()
    started.wait(5)
    policy.restore()  # the app quits while the worker still stops its reply
    quit_.set()
    worker.join(5)
    assert gc.get_threshold() == python_thresholds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _middle_collections(count: int) -> None:
    gc.collect()
    for _ in range(count):
        gc.collect(1)


def test_a_full_collection_waits_for_a_pause_and_for_being_due(python_thresholds):
    clock = Clock()
    policy = CollectorPolicy(clock)
    assert not policy.collect_when_idle(), "no app runs"
    policy.apply()
    _middle_collections(FULL_COLLECTION_DUE)
    policy.note_input()
    clock.now += IDLE_SECONDS / 2
    assert not policy.collect_when_idle(), "the user was typing half a second ago"
    clock.now += IDLE_SECONDS
    with policy.streaming():
        assert not policy.collect_when_idle(), "a reply streams"
    assert policy.collect_when_idle()
    assert gc.get_count()[2] == 0, "it was a full collection"
    _middle_collections(FULL_COLLECTION_DUE - 1)
    assert not policy.collect_when_idle(), "not due yet"
    policy.restore()


def test_a_pause_frees_what_cycles_held(python_thresholds):
    clock = Clock()
    policy = CollectorPolicy(clock)
    policy.apply()
    _middle_collections(FULL_COLLECTION_DUE)
    gc.disable()  # nothing but the pause collects it
    try:

        class Node:
            pass

        cycle = Node()
        cycle.itself = cycle
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
        clock.now += IDLE_SECONDS
        assert policy.collect_when_idle()
        assert gone() is None
    finally:
        gc.enable()
        policy.restore()
