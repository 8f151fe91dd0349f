"""Which local models stay loaded: as many at once as the fit estimate (``tui.zoo.fit``) says this machine holds.

A model loads on first use and stays loaded. When one more would not fit beside those loaded, the least
recently used are unloaded first; a model too big even alone still loads (the estimate is an estimate,
and the user asked for it), alone. The arena asks the same rule whether two models can answer at once.

Free memory is read when nothing is loaded, and loaded models count at their estimates: llama.cpp maps
weights from disk, and mapped pages show as available in /proc/meminfo, so reading it again with models
loaded would count them as free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui.config import EngineSettings
from tui.engine.local import ModelKey
from tui.zoo.fit import GB, GPU_RESERVE_BYTES, Resources, running_need


@dataclass(frozen=True)
class Room:
    fits: bool
    reason: str
    """One line: what the models need of what is free."""


class Residency:
    def __init__(self, settings: EngineSettings, resources: Callable[[], Resources]):
        self.settings = settings
        self._resources = resources
        self._free: Resources | None = None

    def need(self, path: Path, n_ctx: int) -> tuple[int, int]:
        """(RAM, VRAM) bytes the model takes loaded; none known for a file whose header cannot be read
        (loading it will say what is wrong)."""
        try:
            return running_need(path, n_ctx=n_ctx, gpu_layers=self.settings.n_gpu_layers)
        except (OSError, ValueError):
            return 0, 0

    def free(self, *, nothing_loaded: bool) -> Resources:
        if self._free is None or nothing_loaded:
            self._free = self._resources()
        return self._free

    def room(self, models: list[tuple[Path, int]], *, nothing_loaded: bool) -> Room:
        """Whether these (model file, context length) fit in memory at once."""
        needs = [self.need(path, n_ctx) for path, n_ctx in models]
        ram, vram = sum(n[0] for n in needs), sum(n[1] for n in needs)
        free = self.free(nothing_loaded=nothing_loaded)
        if free.ram_bytes is not None and ram > free.ram_bytes:
            return Room(False, f"they need {ram / GB:.1f} GB of RAM together, {free.ram_bytes / GB:.1f} GB is free")
        if vram and free.vram_bytes is not None and vram > free.vram_bytes - GPU_RESERVE_BYTES:
            return Room(
                False, f"they need {vram / GB:.1f} GB of GPU memory together, {free.vram_bytes / GB:.1f} GB is free"
            )
        free_ram = "an unknown amount" if free.ram_bytes is None else f"{free.ram_bytes / GB:.1f} GB"
        return Room(True, f"they need {ram / GB:.1f} GB of RAM together, of {free_ram} free")

    def make_room(self, key: ModelKey, n_ctx: int, loaded: dict[ModelKey, int]) -> list[ModelKey]:
        """The loaded models to unload, least recently used first, so that ``key`` fits beside the rest."""
        self.free(nothing_loaded=not loaded)
        kept = list(loaded)
        unload: list[ModelKey] = []
        while kept:
            models = [(other[0], loaded[other]) for other in kept] + [(key[0], n_ctx)]
            if self.room(models, nothing_loaded=False).fits:
                break
            unload.append(kept.pop(0))
        return unload
