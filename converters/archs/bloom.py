"""BLOOM / BLOOMZ (BELLE-7B, Phoenix) -> GGUF `bloom`. ALiBi positions: no rope keys."""

from __future__ import annotations

import gguf
import numpy as np

from .base import Architecture, T, fused_qkv_order


class Bloom(Architecture):
    hf_architectures = ("BloomForCausalLM", "BloomModel")
    gguf_arch = gguf.MODEL_ARCH.BLOOM
    default_pre = "bloom"
    name_prefix = "transformer."
    has_biases = True
    # lm_head is usually tied and absent; llama.cpp then reuses token_embd.
    global_tensors = (T.TOKEN_EMBD, T.TOKEN_EMBD_NORM, T.OUTPUT_NORM)
    block_tensors = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN)

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.n_embd = self.hparam("hidden_size", "n_embed")
        self.n_head = self.hparam("num_attention_heads", "n_head")

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        writer.add_vocab_size(n_vocab)
        # BLOOM has no position limit of its own (ALiBi); the official converter uses seq_length or n_embd.
        writer.add_context_length(self.hparam("seq_length", default=self.n_embd))
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(4 * self.n_embd)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head)
        writer.add_layer_norm_eps(self.hparam("layer_norm_epsilon", default=1e-5))

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        return {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.TOKEN_EMBD_NORM: (self.n_embd,),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.OUTPUT_NORM: (self.n_embd,),
            T.ATTN_NORM: (self.n_embd,),
            T.ATTN_QKV: (3 * self.n_embd, self.n_embd),
            T.ATTN_OUT: (self.n_embd, self.n_embd),
            T.FFN_NORM: (self.n_embd,),
            T.FFN_UP: (4 * self.n_embd, self.n_embd),
            T.FFN_DOWN: (self.n_embd, 4 * self.n_embd),
        }

    def row_order(self, tensor: gguf.MODEL_TENSOR, rows: int) -> np.ndarray | None:
        return fused_qkv_order(rows, self.n_head) if tensor == T.ATTN_QKV else None


ARCHITECTURE = Bloom
