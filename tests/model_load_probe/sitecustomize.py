"""Counts the real models llama.cpp loads, for the check that keeps ``-m "not slow"`` honest (tests/conftest.py).

Python imports this at start-up in every process the tests start (conftest puts this folder on PYTHONPATH);
where ZOOTUI_TEST_MODEL_LOADS names a file, each load of a real model in that process is appended to it.
The test process counts its own loads with the same function."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

LOG_VARIABLE = "ZOOTUI_TEST_MODEL_LOADS"
# A real model's weights: the smallest real model, SmolLM2-135M Q4_1, is 98 MB; the tiny fixtures are a few
# hundred KB, and a vocab-only load (the tokenizer) reads no weights whatever the file's size.
REAL_MODEL_BYTES = 16 << 20


def count_real_model_loads(llama_class, on_load) -> None:
    """Calls ``on_load(path)`` before each load of a real model by ``llama_class`` (llama_cpp.Llama)."""
    original = llama_class.__init__

    def counting_init(self, model_path, *args, **kwargs):
        # A missing file is left to llama_cpp's own error, which the code under test may be checking for.
        real = os.path.isfile(model_path) and os.path.getsize(model_path) >= REAL_MODEL_BYTES
        if real and not kwargs.get("vocab_only"):
            on_load(str(model_path))
        original(self, model_path, *args, **kwargs)

    llama_class.__init__ = counting_init


def _append_to_log(path: str) -> None:
    with open(os.environ[LOG_VARIABLE], "a", encoding="utf-8") as log:
        log.write(path + "\n")


class _CountWhenLlamaIsImported(importlib.abc.MetaPathFinder):
    """Patches llama_cpp.Llama as its module is imported, so that processes that never load a model pay nothing."""

    def find_spec(self, name, path, target=None):
        if name != "llama_cpp.llama":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_count(module):
            exec_module(module)
            count_real_model_loads(module.Llama, _append_to_log)

        spec.loader.exec_module = exec_and_count
        return spec


if os.environ.get(LOG_VARIABLE) and __name__ == "sitecustomize":
    sys.meta_path.insert(0, _CountWhenLlamaIsImported())
