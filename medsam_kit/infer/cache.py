"""Embedding cache: every slice of a volume is encoded once and reused for every further prompt.

The interactive case (a user clicking on the same volume again and again) must never re-run the
image encoder, which costs 100-1000x more than the prompt encoder + mask decoder. Entries are keyed
by ``(volume_id, slice_index)`` and evicted least-recently-used once their tensors exceed
``max_bytes``, so a 300-slice 512² volume never holds the whole stack of embeddings at once.

Counters (``encoder_calls``, ``encoded_slices``, ``hits``, ``misses``, ``evictions``) let tests and
benchmarks show that a second prompt does no encoder work.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

from medsam_kit.models.segmenter_model import Features

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: ~60 SAM-1 ViT-B 1024² slice embeddings, thousands of tiny ones

Key = tuple[Hashable, Hashable]  # (volume id, slice index or (slice, window y, window x))


def _concat(features: Sequence[Features]) -> Features:
    return Features(
        torch.cat([f.image_embed for f in features]),
        tuple(torch.cat(parts) for parts in zip(*(f.high_res for f in features), strict=True)),
    )


class EmbeddingCache:
    """LRU cache of per-slice :class:`~medsam_kit.models.Features` bounded by bytes.

    Args:
        max_bytes: upper bound on the bytes of all cached tensors; an entry larger than the bound
            is returned to the caller but not kept. ``0`` disables caching.

    Attributes:
        encoder_calls: calls of the encode function (one per encoded batch).
        encoded_slices: slices encoded in total.
        hits / misses: look-ups answered from / not found in the cache.
        evictions: entries dropped to stay under ``max_bytes``.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Key, Features] = OrderedDict()
        self.nbytes = 0
        self.encoder_calls = self.encoded_slices = self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def get(self, key: Key) -> Features | None:
        """Features ``(1, ...)`` of ``key`` (marked most recently used), or None."""
        features = self._entries.get(key)
        if features is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return features

    def put(self, key: Key, features: Features) -> None:
        """Store one slice's features (batch of 1), evicting least-recently-used entries as needed."""
        if key in self._entries:
            self.nbytes -= self._entries.pop(key).nbytes
        size = features.nbytes
        if size > self.max_bytes:
            return
        while self._entries and self.nbytes + size > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = features
        self.nbytes += size

    def usage_by_volume(self) -> dict[Hashable, tuple[int, int]]:
        """``{volume_id: (bytes, entries)}`` held now, per volume (e.g. for a server's memory bound)."""
        usage: dict[Hashable, tuple[int, int]] = {}
        for (volume_id, _), features in self._entries.items():
            nbytes, count = usage.get(volume_id, (0, 0))
            usage[volume_id] = (nbytes + int(features.nbytes), count + 1)
        return usage

    def clear(self, volume_id: Hashable | None = None) -> None:
        """Drop every entry, or only those of ``volume_id``."""
        for key in [k for k in self._entries if volume_id is None or k[0] == volume_id]:
            self.nbytes -= self._entries.pop(key).nbytes

    def features(
        self,
        volume_id: Hashable,
        indices: Sequence[Hashable],
        load: Callable[[list], torch.Tensor],
        encode: Callable[[torch.Tensor], Features],
        batch_size: int = 8,
    ) -> Features:
        """Features of slices ``indices`` of ``volume_id`` (in that order), encoding only the missing ones.

        Args:
            volume_id: any hashable naming the volume (and its preprocessing).
            indices: slice keys (a slice index, or ``(slice, window_y, window_x)``), batch order of the result.
            load: ``load(list_of_keys) -> (B, C, S, S)`` model-input images of those slices.
            encode: the model's encoder, ``(B, C, S, S) -> Features``.
            batch_size: slices per encoder call.

        Returns:
            :class:`Features` with batch ``len(indices)``.
        """
        found: dict[Hashable, Features] = {}
        for z in dict.fromkeys(indices):
            cached = self.get((volume_id, z))
            if cached is not None:
                found[z] = cached
        missing = [z for z in dict.fromkeys(indices) if z not in found]
        for start in range(0, len(missing), max(1, batch_size)):
            chunk = missing[start:start + max(1, batch_size)]
            encoded = encode(load(chunk))
            self.encoder_calls += 1
            self.encoded_slices += len(chunk)
            for n, z in enumerate(chunk):
                # clone: a view would keep the whole batch's storage alive and break the byte bound.
                item = encoded.select(n)._map(lambda t: t.detach().clone())
                found[z] = item
                self.put((volume_id, z), item)
        return _concat([found[z] for z in indices])
