"""LLaMA (LLaMA-1/2 and their fine-tunes: Vicuna, Alpaca, Baize, OpenAssistant-LLaMA …) -> GGUF `llama`."""

from __future__ import annotations

import gguf
import numpy as np

from ..errors import ConversionError
from .base import Architecture, T


def _unpermute_order(rows: int, n_head: int) -> np.ndarray:
    """Undoes the rotate-half row permutation HF's LLaMA import applied to Q and K.

    llama.cpp's rope rotates interleaved pairs, as Meta's original weights expect.
    """
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def half_split_order(rows: int, n_head: int) -> np.ndarray:
    """The rotate-half row permutation HF's LLaMA import applies: Meta's interleaved rows -> HF's.

    Within each head, HF row ``p * head_dim/2 + i`` is Meta row ``2i + p``; the inverse of ``_unpermute_order``.
    """
    return np.arange(rows).reshape(n_head, rows // n_head // 2, 2).swapaxes(1, 2).reshape(-1)


class Llama(Architecture):
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM")
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    default_pre = "default"
    dropped_suffixes = ("rotary_emb.inv_freq",)
    global_tensors = (T.TOKEN_EMBD, T.OUTPUT_NORM)
    block_tensors = (
        T.ATTN_NORM,
        T.ATTN_Q,
        T.ATTN_K,
        T.ATTN_V,
        T.ATTN_OUT,
        T.FFN_NORM,
        T.FFN_GATE,
        T.FFN_UP,
        T.FFN_DOWN,
    )

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.n_embd = self.hparam("hidden_size")
        self.n_head = self.hparam("num_attention_heads")
        self.n_head_kv = self.hparam("num_key_value_heads", default=self.n_head)
        self.head_dim = self.hparam("head_dim", default=self.n_embd // self.n_head)
        self.n_ff = self.hparam("intermediate_size")
        # transformers 5 writes rope_parameters; 4.x wrote rope_theta at the top and rope_scaling ({type, factor}).
        self.rope_theta = self.hparam(
            "rope_parameters.rope_theta", "rope_scaling.rope_theta", "rope_theta", default=10000.0
        )
        self.rope_type = self.hparam(
            "rope_parameters.rope_type", "rope_scaling.rope_type", "rope_scaling.type", default="default"
        )
        if self.rope_type not in ("default", "linear"):
            raise ConversionError(
                f"rope scaling type {self.rope_type!r} is not supported; only default and linear rope are"
            )

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(self.hparam("max_position_embeddings", "max_sequence_length", default=2048))
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head_kv)
        writer.add_layer_norm_rms_eps(self.hparam("rms_norm_eps", default=1e-6))
        writer.add_rope_dimension_count(self.head_dim)
        writer.add_rope_freq_base(float(self.rope_theta))
        if self.head_dim != self.n_embd // self.n_head:
            writer.add_key_length(self.head_dim)
            writer.add_value_length(self.head_dim)
        if self.rope_type == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(
                float(self.hparam("rope_parameters.factor", "rope_scaling.factor", kind=float))
            )

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        q_rows, kv_rows = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        return {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.OUTPUT_NORM: (self.n_embd,),
            T.ATTN_NORM: (self.n_embd,),
            T.ATTN_Q: (q_rows, self.n_embd),
            T.ATTN_K: (kv_rows, self.n_embd),
            T.ATTN_V: (kv_rows, self.n_embd),
            T.ATTN_OUT: (self.n_embd, q_rows),
            T.FFN_NORM: (self.n_embd,),
            T.FFN_GATE: (self.n_ff, self.n_embd),
            T.FFN_UP: (self.n_ff, self.n_embd),
            T.FFN_DOWN: (self.n_embd, self.n_ff),
        }

    def row_order(self, tensor: gguf.MODEL_TENSOR, rows: int) -> np.ndarray | None:
        if tensor == T.ATTN_Q:
            return _unpermute_order(rows, self.n_head)
        if tensor == T.ATTN_K:
            return _unpermute_order(rows, self.n_head_kv)
        return None


ARCHITECTURE = Llama
