"""Model work for the server: one :class:`~medsam_kit.infer.Segmenter`, one lock, embedding bookkeeping.

Threading: the Segmenter (its model, slice predictor and embedding cache) is not thread-safe, and
one process has one model, so every call into it runs under :attr:`ModelRunner.lock`; requests
queue there in arrival order while uploads, listings and deletes go on. The cost per request is
known: a prompt on a volume whose slices are already encoded is decoder work only.

Dropping embeddings (a deleted or evicted session) mutates the cache, so it too needs the lock, but
a DELETE should not wait seconds behind someone else's segmentation. :meth:`ModelRunner.drop` queues
the ids and clears them at once when the lock is free; otherwise the thread that holds the lock
clears them right after releasing it (:meth:`_drain_when_free` runs after every release and loops
until nothing is queued, so no queued id is left behind).

Per request the runner reports the encoder work it caused (``encoded_slices``, from the cache's
counters) and which cache volume ids appeared (the Segmenter keys embeddings by volume content),
so the session store can charge each session for its embeddings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from medsam_kit.io import Volume


@dataclass
class RunReport:
    """What one model call did.

    Attributes:
        seconds: wall time of the Segmenter call (not of waiting for the lock).
        encoded_slices: slices the image encoder ran on during this call (0: all embeddings reused).
        new_ids: cache volume ids that did not exist before the call.
        usage: ``{cache volume id: (bytes, entries)}`` of the whole cache after the call.
    """

    seconds: float
    encoded_slices: int
    new_ids: set[Hashable]
    usage: dict[Hashable, tuple[int, int]]


class ModelRunner:
    """Serialises calls into one Segmenter (see the module docstring).

    Args:
        segmenter: the :class:`~medsam_kit.infer.Segmenter` all requests share.
    """

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.lock = threading.Lock()
        self._queued: list[set[Hashable]] = []
        self._queue_lock = threading.Lock()

    def segment(self, volume: Volume, prompts: Mapping | None, refine: str | None = None
                ) -> tuple[object, RunReport]:
        """``segmenter.segment_volume(volume, prompts, refine=refine)`` under the lock, with its :class:`RunReport`.

        ``prompts`` is a parsed :class:`~medsam_kit.prompts.PromptSet` (or None for automatic mode);
        ``refine`` (automatic mode) None keeps the server's ``--refine``.
        """
        try:
            with self.lock:
                self._clear_queued()
                cache = self.segmenter.cache
                before_ids = set(cache.usage_by_volume())
                before_slices = cache.encoded_slices
                start = time.perf_counter()
                result = self.segmenter.segment_volume(volume, prompts, refine=refine)
                seconds = time.perf_counter() - start
                usage = cache.usage_by_volume()
                report = RunReport(seconds, cache.encoded_slices - before_slices, set(usage) - before_ids, usage)
        finally:
            self._drain_when_free()
        return result, report

    def drop(self, volume_ids: Iterable[Hashable]) -> None:
        """Forget the embeddings of ``volume_ids`` now, or as soon as the running model call ends."""
        ids = set(volume_ids)
        if not ids:
            return
        with self._queue_lock:
            self._queued.append(ids)
        self._drain_when_free()

    def _clear_queued(self) -> None:
        with self._queue_lock:
            queued, self._queued = self._queued, []
        for ids in queued:
            for volume_id in ids:
                self.segmenter.cache.clear(volume_id)

    def _drain_when_free(self) -> None:
        while True:
            if not self.lock.acquire(blocking=False):
                return  # the holder drains after it releases
            try:
                self._clear_queued()
            finally:
                self.lock.release()
            with self._queue_lock:
                if not self._queued:
                    return
