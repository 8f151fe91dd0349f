"""The app's cycle-collector policy: its thresholds while it runs, raised while replies stream."""

import gc
import threading

import pytest

from tui.collector import (
    MIDDLE_GENERATION_THRESHOLD,
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
    app = (YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, python_thresholds[2])
    streaming = (STREAMING_YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, python_thresholds[2])
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
