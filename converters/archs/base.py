"""What every architecture module provides, and the tensor planning they share.

An architecture reads its hyper-parameters from config.json (accepting the key spellings of old and
new transformers releases), writes its GGUF keys, declares the tensor shapes it expects and the
tensors llama.cpp requires, and describes any transform as a reordering or selection of rows: that
keeps every transform streamable, because rows can be gathered one slice at a time. A fused tensor
llama.cpp wants apart is split into several outputs that each select their rows from the same source;
a bias llama.cpp requires but the model never had is written as zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import gguf
import numpy as np

from ..errors import ConversionError
from ..jsonfile import ANY, BOOL, STR, Arr, Int, Num, Obj, Schema, check, describe
from ..tokenizer import TokenizerHints

T = gguf.MODEL_TENSOR
_MISSING = object()
MAX_INT32 = 2**31 - 1
# Far above any real model (LLaMA-65B has 80 blocks); gguf builds a name map per block, and an
# absurd count (10**12) would run for ever before any tensor is looked at.
MAX_BLOCKS = 1024


@dataclass(frozen=True)
class PlannedTensor:
    source: str | None  # tensor name in the checkpoint; None for zeros the checkpoint does not hold
    name: str  # GGUF tensor name
    shape: tuple[int, ...]
    row_order: np.ndarray | None = None  # output row i is source row row_order[i]
    scale: float | None = None  # every value is multiplied by this (a factor llama.cpp's graph leaves out)


class Architecture:
    hf_architectures: ClassVar[tuple[str, ...]]
    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    default_pre: ClassVar[str] = "gpt-2"  # llama.cpp pre-tokenizer when a BPE tokenizer does not reveal its own
    dropped_suffixes: ClassVar[tuple[str, ...]] = ()  # buffers that are not weights (masks, rotary caches)
    name_prefix: ClassVar[str] = ""  # stripped before mapping names (gguf's maps know BLOOM's names without it)
    has_biases: ClassVar[bool] = False  # llama.cpp requires a bias beside every weight but the embedding and output
    block_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]]  # required in every block
    global_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]]  # required once
    optional_global_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = (T.OUTPUT,)
    # Tensors whose bias llama.cpp's graph requires although the model has none: written as zeros.
    zero_biases: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = ()
    tokenizer: ClassVar[TokenizerHints] = TokenizerHints()

    def __init__(self, config: dict) -> None:
        self.config = config
        self.n_layer = self.hparam("num_hidden_layers", "n_layer", "num_layers", maximum=MAX_BLOCKS)
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layer)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def hparam(self, *keys: str, default=_MISSING, kind: type | None = None, minimum=None, maximum=None):
        """The first of `keys` present in config.json (old and new spellings), or `default`, checked by type.

        A dotted key reads inside an object ("rope_scaling.factor"); JSON null counts as absent.
        `kind` (int, float, bool, str, dict or list) defaults to the type of `default`, and to int
        without a default. An int is a count or a size: from 1 (or `minimum`) to 2**31 - 1 (or
        `maximum`), which every GGUF integer field holds. A float is finite and positive unless
        `minimum` says otherwise. With default None and no `kind` the value is not checked.
        """
        if kind is None and default is not None:
            kind = int if default is _MISSING else type(default)
        for key in keys:
            value = self._lookup(key)
            if value is not None:
                return value if kind is None else check(value, _schema(kind, minimum, maximum), "config.json", key)
        if default is _MISSING:
            raise ConversionError(
                f"config.json lacks {keys[0]} (needed for {self.hf_architectures[0]}); add it from the model card"
            )
        return default

    def _lookup(self, key: str):
        value = self.config
        for part in key.split("."):
            if not isinstance(value, dict):
                raise ConversionError(
                    f"config.json: {key.rpartition('.')[0]} must be an object, not {describe(value)}; fix or re-download config.json"
                )
            value = value.get(part)
            if value is None:
                return None
        return value

    # --- per-architecture parts ---------------------------------------------------------------

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        raise NotImplementedError

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        """HF (out, in) shape of each tensor type's weight; a bias has the weight's first dimension."""
        raise NotImplementedError

    def row_order(self, tensor: gguf.MODEL_TENSOR, rows: int) -> np.ndarray | None:
        return None

    def split_rows(self, tensor: gguf.MODEL_TENSOR) -> list[tuple[gguf.MODEL_TENSOR, int]] | None:
        """The tensors one fused source tensor becomes, with their row counts, in row order; None to keep it whole."""
        return None

    # --- shared planning ----------------------------------------------------------------------

    def vocab_rows(self, checkpoint) -> int:
        """The model's vocabulary size: the token embedding's rows (configs are sometimes stale)."""
        for name in checkpoint.names():
            found = self.name_map.get_type_and_name(name.removeprefix(self.name_prefix), try_suffixes=(".weight",))
            if found and found[0] == T.TOKEN_EMBD:
                return checkpoint.info(name).shape[0]
        raise ConversionError(f"{checkpoint.directory} has no token embedding tensor; the checkpoint is incomplete")

    def plan(self, checkpoint) -> list[PlannedTensor]:
        shapes = self.weight_shapes(self.vocab_rows(checkpoint))
        planned = []
        for source in checkpoint.names():
            if not source.endswith(self.dropped_suffixes):
                planned.extend(self.planned_tensors(checkpoint, source, shapes))
        planned.extend(self._zero_biases(planned, shapes))
        self._check_complete(planned)
        return planned

    def planned_tensors(
        self, checkpoint, source: str, shapes: dict[gguf.MODEL_TENSOR, tuple[int, ...]], hf_name: str | None = None
    ) -> list[PlannedTensor]:
        """The GGUF tensor(s) a checkpoint tensor becomes, its type and shape checked against config.json.

        ``hf_name`` is the name to map when the tensor is stored under another one (T5's embedding copies).
        """
        found = self.name_map.get_type_and_name(
            (hf_name or source).removeprefix(self.name_prefix), try_suffixes=(".weight", ".bias")
        )
        if found is None or found[0] not in shapes:
            raise ConversionError(
                f"unexpected tensor {source} for {self.hf_architectures[0]}; the checkpoint is a variant this converter does not know"
            )
        tensor_type, name = found
        info = checkpoint.info(source)
        if info.dtype.kind != "f":
            raise ConversionError(
                f"{source} is stored as {info.dtype.name}, but a weight is a float tensor (f16, bf16 or f32); the checkpoint is damaged, re-download it"
            )
        shape = info.shape
        expected = shapes[tensor_type] if name.endswith(".weight") else shapes[tensor_type][:1]
        if shape != expected:
            raise ConversionError(
                f"shape mismatch: {source} is {list(shape)}, config.json implies {list(expected)}; the weights and config.json disagree"
            )
        try:
            return self._outputs(source, tensor_type, name, shape)
        except ValueError:  # numpy cannot split the rows by the head counts config.json gives
            raise ConversionError(
                f"config.json's head counts do not divide the {shape[0]} rows of {source}; the weights and config.json disagree"
            ) from None

    def _outputs(
        self, source: str, tensor_type: gguf.MODEL_TENSOR, name: str, shape: tuple[int, ...]
    ) -> list[PlannedTensor]:
        parts = self.split_rows(tensor_type)
        if parts is None:
            return [PlannedTensor(source, name, shape, self.row_order(tensor_type, shape[0]))]
        block = re.match(r"blk\.(\d+)\.", name)
        suffix = name[name.rindex(".") :]
        outputs, start = [], 0
        for part, rows in parts:
            order = self.row_order(part, rows)
            selected = start + (np.arange(rows) if order is None else order)
            part_name = gguf.TENSOR_NAMES[part].format(bid=block[1] if block else "") + suffix
            outputs.append(PlannedTensor(source, part_name, (rows, *shape[1:]), selected))
            start += rows
        return outputs

    def _zero_biases(self, planned: list[PlannedTensor], shapes: dict) -> list[PlannedTensor]:
        have = {p.name for p in planned}
        zeros = []
        for tensor in self.zero_biases:
            template = gguf.TENSOR_NAMES[tensor]
            for name in {template.format(bid=b) for b in range(self.n_layer)}:
                if name + ".weight" in have and name + ".bias" not in have:
                    zeros.append(PlannedTensor(None, name + ".bias", shapes[tensor][:1]))
        return sorted(zeros, key=lambda p: p.name)

    def required_tensors(self) -> list[str]:
        """GGUF names llama.cpp needs for this architecture (the global tensors, then each block's)."""

        def suffixes(tensor: gguf.MODEL_TENSOR) -> tuple[str, ...]:
            return (".weight", ".bias") if self.has_biases and tensor not in (T.TOKEN_EMBD, T.OUTPUT) else (".weight",)

        required = [gguf.TENSOR_NAMES[t] + s for t in self.global_tensors for s in suffixes(t)]
        required += [
            gguf.TENSOR_NAMES[t].format(bid=b) + s
            for b in range(self.n_layer)
            for t in self.block_tensors
            for s in suffixes(t)
        ]
        return required

    def _check_complete(self, planned: list[PlannedTensor]) -> None:
        have = {p.name for p in planned}
        missing = [name for name in self.required_tensors() if name not in have]
        if missing:
            raise ConversionError(
                f"the checkpoint lacks {len(missing)} required tensor(s), first {missing[0]}; a shard is missing or truncated, re-download it"
            )


def _schema(kind: type, minimum, maximum) -> Schema:
    if kind is int:
        return Int(1 if minimum is None else minimum, MAX_INT32 if maximum is None else maximum)
    if kind is float:
        return Num(minimum, maximum, positive=minimum is None)
    return {bool: BOOL, str: STR, dict: Obj({}), list: Arr(ANY)}[kind]


def fused_qkv_order(rows: int, n_head: int) -> np.ndarray:
    """Row order turning a fused QKV stored per head, (n_head, 3, head_dim), into llama.cpp's [all Q | all K | all V]."""
    return np.arange(rows).reshape(n_head, 3, rows // n_head // 3).swapaxes(0, 1).reshape(-1)
