"""Memory: the probe of one pass's working memory and the pool of CPU buffers that feature
batches are drawn from."""

from __future__ import annotations

import math
import mmap
import threading
import weakref
from collections.abc import Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

BYTES = 4  # every feature is float32
_BYTES = BYTES
_HUGE_PAGE = 2 * 2**20


class _PeakMemory(TorchDispatchMode):
    """Peak bytes of the storages that the operations run under this mode allocate and keep
    alive at the same time (storages of the ``exclude`` tensors, e.g. parameters, not counted)."""

    def __init__(self, exclude: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors using it]
        self._current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._excluded or storage.nbytes() == 0:
            return
        if ptr not in self._live:
            self._live[ptr] = [storage.nbytes(), 0]
            self._current += storage.nbytes()
            self.peak = max(self.peak, self._current)
        self._live[ptr][1] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        entry = self._live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            del self._live[ptr]
            self._current -= entry[0]



class _BatchBuffers:
    """Where the CPU buffers of feature batches come from: fresh huge-page memory, or a buffer
    of an earlier batch that no tensor uses any more.

    A buffer of 2 MiB and more is mapped on its own, 2 MiB-aligned, and advised to use
    transparent huge pages (the kernel's usual ``madvise`` mode grants them only on request),
    so its first write faults in one page per 2 MiB instead of per 4 KiB. Fresh memory still
    costs the kernel's zeroing of every page, which on a VM can cost as much as computing the
    gradients: batches of per-example gradients are hundreds of MiB. So, like PyTorch's CUDA
    caching allocator, a freed buffer is kept and handed to the next batch that fits in it.

    A buffer is free when its storage is used by no tensor but the pool's own: every view of a
    batch, a NumPy array made from one (``.numpy()`` holds the tensor) and a tensor saved for
    autograd holds the storage, so a buffer is never reused while anything can still read it.
    At most ``max_free_bytes`` of free buffers are kept; :meth:`release` drops them all."""

    def __init__(self, max_free_bytes: int = 1 << 30) -> None:
        self.max_free_bytes = max_free_bytes
        self._buffers: list[torch.Tensor] = []  # flat float32, one per mapping
        self._idle_uses: dict[int, int] = {}  # id(buffer) -> its storage's use count when free
        self._lock = threading.Lock()

    @staticmethod
    def _uses(buffer: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)

    def _free(self) -> list[torch.Tensor]:
        return [b for b in self._buffers if self._uses(b) == self._idle_uses[id(b)]]

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = math.prod(shape)
        if count * _BYTES < _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
            return torch.empty(shape)
        with self._lock:
            free = self._free()
            fits = [b for b in free if b.numel() >= count]
            if fits:
                return min(fits, key=torch.Tensor.numel)[:count].view(shape)
            self._trim(free, keep=self.max_free_bytes)
            buf = mmap.mmap(
                -1, count * _BYTES + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            )
            buf.madvise(mmap.MADV_HUGEPAGE)
            start = -torch.frombuffer(buf, dtype=torch.uint8, count=1).data_ptr() % _HUGE_PAGE
            flat = torch.frombuffer(buf, dtype=torch.float32, count=count, offset=start)
            self._buffers.append(flat)
            self._idle_uses[id(flat)] = self._uses(flat)
            return flat.view(shape)

    def _trim(self, free: list[torch.Tensor], keep: int) -> None:
        """Unmaps the largest free buffers until at most ``keep`` bytes of them are left."""
        for b in sorted(free, key=torch.Tensor.numel, reverse=True):
            if sum(f.numel() for f in free) * _BYTES <= keep:
                break
            free.remove(b)
            self._buffers.remove(b)
            del self._idle_uses[id(b)]

    def release(self) -> None:
        """Unmaps every free buffer (those still in use stay until they are freed and a later
        batch is drawn)."""
        with self._lock:
            self._trim(self._free(), keep=0)

    def held_bytes(self) -> int:
        """Bytes mapped by the pool, in use or free."""
        with self._lock:
            return sum(b.numel() for b in self._buffers) * _BYTES


_BATCH_BUFFERS = _BatchBuffers()


def _empty(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``torch.empty(shape)`` float32 for a batch of features; on the CPU from
    :data:`_BATCH_BUFFERS`. Its contents are arbitrary: an earlier batch's features."""
    if device.type != "cpu":
        return torch.empty(shape, device=device)
    return _BATCH_BUFFERS.empty(shape)

