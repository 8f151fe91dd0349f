"""GPT-NeoX (Pythia, Dolly v2, RedPajama-INCITE, OpenAssistant-Pythia, OpenChatKit) -> GGUF `gptneox`."""

from __future__ import annotations

import gguf
import numpy as np

from .base import Architecture, T, fused_qkv_order


class GPTNeoX(Architecture):
    hf_architectures = ("GPTNeoXForCausalLM",)
    gguf_arch = gguf.MODEL_ARCH.GPTNEOX
    default_pre = "gpt-2"
    # Causal-mask and rotary buffers that older transformers saved with the weights (bool/byte/float).
    dropped_suffixes = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
    has_biases = True
    # llama.cpp has no tied-embedding fallback for gptneox, so embed_out is required.
    global_tensors = (T.TOKEN_EMBD, T.OUTPUT_NORM, T.OUTPUT)
    block_tensors = (T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN)

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.n_embd = self.hparam("hidden_size")
        self.n_head = self.hparam("num_attention_heads")
        self.n_ff = self.hparam("intermediate_size", default=4 * self.n_embd)
        self.rotary_pct = self.hparam(
            "rope_parameters.partial_rotary_factor", "rotary_pct", "partial_rotary_factor", default=1.0, maximum=1.0
        )
        self.rope_theta = self.hparam("rope_parameters.rope_theta", "rotary_emb_base", "rope_theta", default=10000.0)

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(self.hparam("max_position_embeddings", default=2048))
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_rope_dimension_count(int(self.rotary_pct * (self.n_embd // self.n_head)))
        writer.add_rope_freq_base(float(self.rope_theta))
        # Absent from many 2023 configs; transformers' default is parallel.
        writer.add_parallel_residual(bool(self.hparam("use_parallel_residual", default=True)))
        writer.add_layer_norm_eps(self.hparam("layer_norm_eps", "layer_norm_epsilon", default=1e-5))

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        return {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.OUTPUT_NORM: (self.n_embd,),
            T.ATTN_NORM: (self.n_embd,),
            T.ATTN_QKV: (3 * self.n_embd, self.n_embd),
            T.ATTN_OUT: (self.n_embd, self.n_embd),
            T.FFN_NORM: (self.n_embd,),
            T.FFN_UP: (self.n_ff, self.n_embd),
            T.FFN_DOWN: (self.n_embd, self.n_ff),
        }

    def row_order(self, tensor: gguf.MODEL_TENSOR, rows: int) -> np.ndarray | None:
        return fused_qkv_order(rows, self.n_head) if tensor == T.ATTN_QKV else None


ARCHITECTURE = GPTNeoX
