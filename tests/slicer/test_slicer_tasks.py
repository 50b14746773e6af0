"""MedSAMKitLib.tasks.BackgroundCall: result, error and progress handed from the worker to the GUI thread."""

from __future__ import annotations

import threading

import pytest
from MedSAMKitLib.tasks import BackgroundCall


def test_result_and_progress_come_back():
    release = threading.Event()

    def work(a, b, progress):
        progress(0.5, "half way")
        release.wait(5)
        return a + b

    call = BackgroundCall(work, 2, 3).start()
    assert not call.wait(0.05) and not call.done  # blocked until released
    with pytest.raises(RuntimeError, match="still running"):
        call.result()
    for _ in range(100):
        if call.progress == (0.5, "half way"):
            break
        call.wait(0.01)
    assert call.progress == (0.5, "half way")
    release.set()
    assert call.wait(5) and call.result() == 5


def test_worker_exception_is_raised_in_the_caller():
    def fail(progress):
        raise ValueError("server said no")

    call = BackgroundCall(fail).start()
    assert call.wait(5)
    with pytest.raises(ValueError, match="server said no"):
        call.result()
