"""Saved llama.cpp histories (the evaluated KV cache) of recent conversations, within a bound on the bytes they hold.

llama.cpp copies each history straight into an anonymous private memory map of its own, which this cache counts
(page-rounded) against the bound before it is made, and unmaps when it evicts it. llama-cpp-python's
``save_state`` made three copies per save (a ctypes buffer, a compacted one, ``bytes``) and a numpy copy of the
score buffer; below glibc's mmap threshold they were freed into the heaps of the threads that generated, which
kept them: with 128 MB of states, glibc's arenas held 453 MB, 280 MB of it free (mallinfo2, engine probe with
ten alternating conversations). What the cache holds beyond its maps is the tokens each history is keyed by.
"""

from __future__ import annotations

import ctypes
import mmap
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

PAGE = mmap.PAGESIZE


@dataclass
class SavedHistory:
    tokens: tuple[int, ...]
    buffer: mmap.mmap
    size: int
    """Bytes of llama.cpp state at the start of ``buffer`` (the map is this rounded up to pages)."""

    @property
    def held_bytes(self) -> int:
        return len(self.buffer)


def _mapped_size(size: int) -> int:
    return max(PAGE, -(-size // PAGE) * PAGE)


def common_prefix(left, right) -> int:
    count = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        count += 1
    return count


class StateCache:
    """Histories keyed by their tokens, least recently used evicted first; ``held_bytes`` never exceeds
    ``capacity_bytes``, as room is made before a history is copied."""

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._saved: OrderedDict[tuple[int, ...], SavedHistory] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._saved)

    @property
    def held_bytes(self) -> int:
        return sum(saved.held_bytes for saved in self._saved.values())

    def save(self, llm: Any) -> bool:
        """Keep ``llm``'s evaluated history; False when it is larger than the whole cache or llama.cpp fails."""
        import llama_cpp

        tokens = tuple(llm.input_ids[: llm.n_tokens].tolist())
        size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
        mapped = _mapped_size(size)
        if size == 0 or mapped > self.capacity_bytes:
            return False
        # A saved history this one extends can serve no prompt better than this one.
        for key in [key for key in self._saved if key == tokens[: len(key)]]:
            self._drop(key)
        while self._saved and self.held_bytes + mapped > self.capacity_bytes:
            self._drop(next(iter(self._saved)))
            self.evictions += 1
        buffer = mmap.mmap(-1, mapped, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = (ctypes.c_uint8 * size).from_buffer(buffer)
        written = llama_cpp.llama_state_get_data(llm._ctx.ctx, view, size)
        del view  # a map cannot be closed while a ctypes array exports it
        if written == 0 or written > size:
            buffer.close()
            return False
        self._saved[tokens] = SavedHistory(tokens, buffer, written)
        return True

    def best_match(self, tokens: list[int]) -> SavedHistory | None:
        """The saved history sharing the longest prefix with ``tokens`` (None when none shares any)."""
        best, best_shared = None, 0
        for saved in self._saved.values():
            shared = common_prefix(saved.tokens, tokens)
            if shared > best_shared:
                best, best_shared = saved, shared
        return best

    def restore(self, llm: Any, saved: SavedHistory) -> None:
        """Make ``saved`` ``llm``'s evaluated history (its KV cache and tokens); it becomes the most recently used."""
        import llama_cpp

        self._saved.move_to_end(saved.tokens)
        view = (ctypes.c_uint8 * saved.size).from_buffer(saved.buffer)
        try:
            read = llama_cpp.llama_state_set_data(llm._ctx.ctx, view, saved.size)
        finally:
            del view
        if read != saved.size:
            llm.reset()  # llama.cpp cleared what it had read; nothing evaluated is trusted
            return
        llm.input_ids[: len(saved.tokens)] = saved.tokens
        llm.n_tokens = len(saved.tokens)

    def clear(self) -> None:
        for key in list(self._saved):
            self._drop(key)

    def _drop(self, key: tuple[int, ...]) -> None:
        self._saved.pop(key).buffer.close()
