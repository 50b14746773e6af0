"""Uploaded volumes held between requests: an LRU store bounded by bytes.

A session is one uploaded :class:`~medsam_kit.io.Volume` under a random id (uuid4 hex). Its memory
is the volume array plus its share of the Segmenter's embedding cache: the cache entries of the
cache volume ids that first appeared while this session was segmented (the Segmenter keys its cache
by a hash of the volume's content, see :meth:`Segmenter._volume_id`). That share is a snapshot taken
after each model call (:meth:`SessionStore.record_embeddings`), when the model lock is held and the
cache can be read safely.

Eviction: whenever the total exceeds ``max_bytes`` (after an upload, after model work grew the
embeddings) the least recently used sessions are dropped, never the one just uploaded or segmented.
Evicting hands back the cache ids whose embeddings must go (those no remaining session uses); the
caller drops them through the model runner. A volume larger than the bound on its own is refused
(413). Ids of evicted sessions are remembered (the last ``remember_evicted``) so a client asking
for one learns it was evicted, not that it never existed.

Thread safety: one lock guards the store; every method takes it briefly and never calls out
while holding it, so the store never waits on model work.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from medsam_kit.io import Volume
from medsam_kit.serve.errors import ApiError


@dataclass
class Session:
    """One uploaded volume.

    Attributes:
        id: uuid4 hex given to the client.
        volume: the upload, ``(Z, Y, X)`` or ``(C, Z, Y, X)``, with its LPS geometry; never modified.
        created: ``time.time()`` of the upload.
        embedding_ids: cache volume ids (Segmenter content hashes) created while segmenting this volume.
        embedding_bytes / embedding_entries: their size in the cache as of the last model call.
    """

    id: str
    volume: Volume
    created: float = field(default_factory=time.time)
    embedding_ids: set[Hashable] = field(default_factory=set)
    embedding_bytes: int = 0
    embedding_entries: int = 0

    @property
    def volume_bytes(self) -> int:
        return int(self.volume.array.nbytes)

    @property
    def nbytes(self) -> int:
        """Memory charged to the session: the volume array and its embeddings."""
        return self.volume_bytes + self.embedding_bytes

    @property
    def channels(self) -> int:
        return self.volume.num_channels

    def describe(self) -> dict:
        """The upload response: ``{"id", "shape_zyx": [Z, Y, X], "channels", "geometry"}``."""
        return {"id": self.id, "shape_zyx": list(self.volume.spatial_shape), "channels": self.channels,
                "geometry": self.volume.geometry.to_dict()}

    def summary(self) -> dict:
        """The listing entry: ``{"id", "shape_zyx", "channels", "bytes"}``."""
        return {"id": self.id, "shape_zyx": list(self.volume.spatial_shape), "channels": self.channels,
                "bytes": self.nbytes}


class SessionStore:
    """LRU store of :class:`Session` bounded by ``max_bytes`` (volumes + their embeddings).

    Args:
        max_bytes: bound on the memory of all sessions together.
        remember_evicted: how many evicted ids are remembered for the "evicted" 404 reason.
    """

    def __init__(self, max_bytes: int, remember_evicted: int = 4096) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._remember = int(remember_evicted)
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._evicted: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._sessions.values())

    def list(self) -> list[Session]:
        """Sessions, least recently used first (does not change the order)."""
        with self._lock:
            return list(self._sessions.values())

    def get(self, session_id: str) -> Session:
        """The session ``session_id``, marked most recently used; 404 when unknown or evicted."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise self._missing(session_id)
            self._sessions.move_to_end(session_id)
            return session

    def _missing(self, session_id: str) -> ApiError:
        shown = session_id if len(session_id) <= 40 else session_id[:37] + "..."
        if session_id in self._evicted:
            return ApiError(404, f"volume {shown!r} was evicted (least recently used) to keep the server under its "
                                 f"memory bound; upload it again")
        return ApiError(404, f"unknown volume id {shown!r}; upload the volume first (POST /v1/volumes) or list "
                             f"them (GET /v1/volumes)")

    # ------------------------------------------------------------------ changes
    def add(self, volume: Volume) -> tuple[Session, set[Hashable]]:
        """Store ``volume`` as a new session; returns it and the cache ids to drop for evicted sessions.

        Raises:
            ApiError: 413 when the volume alone is larger than ``max_bytes``.
        """
        session = Session(uuid.uuid4().hex, volume)
        if session.nbytes > self.max_bytes:
            raise ApiError(413, f"the volume takes {session.nbytes / 2**20:.1f} MiB but the server holds at most "
                                f"{self.max_bytes / 2**20:.1f} MiB of volumes (--max-memory-mb)")
        with self._lock:
            self._sessions[session.id] = session
            return session, self._evict_over_bound(keep=session.id)

    def remove(self, session_id: str) -> tuple[Session, set[Hashable]]:
        """Delete a session; returns it and the cache ids to drop (those no other session uses)."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
            if session is None:
                raise self._missing(session_id)
            return session, session.embedding_ids - self._ids_in_use()

    def record_embeddings(self, session_id: str, new_ids: Iterable[Hashable],
                          usage: Mapping[Hashable, tuple[int, int]]) -> set[Hashable]:
        """After model work on ``session_id``: attribute ``new_ids`` to it, refresh every session's share.

        Args:
            session_id: the session just segmented (it may have been deleted meanwhile).
            new_ids: cache volume ids that appeared during that work.
            usage: ``{cache volume id: (bytes, entries)}`` of the whole cache now.

        Returns:
            Cache ids to drop: of sessions evicted to get back under the bound, and ``new_ids`` when
            the session is gone (deleted or evicted while it was being segmented).
        """
        new_ids = set(new_ids)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.embedding_ids |= new_ids
            for s in self._sessions.values():
                sizes = [usage.get(v, (0, 0)) for v in s.embedding_ids]
                s.embedding_bytes = sum(b for b, _ in sizes)
                s.embedding_entries = sum(n for _, n in sizes)
            drop = self._evict_over_bound(keep=session_id)
            if session is None:
                drop |= new_ids - self._ids_in_use()
            return drop

    # ------------------------------------------------------------------ internals (lock held)
    def _ids_in_use(self) -> set[Hashable]:
        return set().union(*(s.embedding_ids for s in self._sessions.values()))

    def _evict_over_bound(self, keep: str) -> set[Hashable]:
        evicted: list[Session] = []
        total = sum(s.nbytes for s in self._sessions.values())
        for sid in list(self._sessions):
            if total <= self.max_bytes:
                break
            if sid == keep:
                continue
            session = self._sessions.pop(sid)
            total -= session.nbytes
            evicted.append(session)
            self._evicted[sid] = None
            self.evictions += 1
        while len(self._evicted) > self._remember:
            self._evicted.popitem(last=False)
        dropped = set().union(*(s.embedding_ids for s in evicted)) if evicted else set()
        return dropped - self._ids_in_use()
