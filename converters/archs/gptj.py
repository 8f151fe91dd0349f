"""GPT-J (Dolly v1, GPT-JT-Moderation) -> GGUF `phi2`.

llama.cpp has no GPT-J graph (`gptj` is a name only), but its phi2 graph computes GPT-J's function:
one LayerNorm feeding attention and the MLP in parallel, rotary embedding on the first rotary_dim
dimensions of each head, a tanh-GELU MLP with biases, and a biased output layer. Three things differ:

- GPT-J rotates interleaved pairs (2i, 2i+1); phi2's NEOX rope rotates (i, i + rotary_dim / 2). The
  rotary rows of every Q and K head are reordered to match. Q·K sums over the head's rows, so a
  reordering shared by Q and K leaves the attention scores, and the model, unchanged.
- phi2 requires a bias on Q, K, V and the attention output, which GPT-J has not: zeros.
- GPT-J pads its embedding past the tokenizer (50400 rows for 50257 tokens); those rows stay
  unused tokens in the vocabulary.
"""

from __future__ import annotations

import gguf
import numpy as np

from ..errors import ConversionError
from .base import Architecture, T


def _neox_rotary_order(rows: int, head_dim: int, rotary_dim: int) -> np.ndarray:
    """Row order that takes each head's first rotary_dim rows from interleaved pairs to two halves."""
    within = np.arange(head_dim)
    within[:rotary_dim] = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2)])
    heads = np.arange(rows // head_dim)[:, None] * head_dim
    return (heads + within).reshape(-1)


class GPTJ(Architecture):
    hf_architectures = ("GPTJForCausalLM",)
    gguf_arch = gguf.MODEL_ARCH.PHI2
    default_pre = "gpt-2"
    # The causal mask and masked_bias that transformers 4.x saved with the weights.
    dropped_suffixes = (".attn.bias", ".attn.masked_bias")
    has_biases = True
    zero_biases = (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.OUTPUT)
    global_tensors = (T.TOKEN_EMBD, T.OUTPUT_NORM, T.OUTPUT)
    block_tensors = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_UP, T.FFN_DOWN)

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.n_embd = self.hparam("n_embd", "hidden_size")
        self.n_head = self.hparam("n_head", "num_attention_heads")
        self.head_dim = self.n_embd // self.n_head
        # rotary_dim null means rotary over the whole head (transformers' GPT-J does the same).
        self.rotary_dim = self.hparam("rotary_dim", default=self.head_dim, maximum=self.head_dim)
        self.n_ff = self.hparam("n_inner", default=4 * self.n_embd)
        if self.n_embd % self.n_head or self.rotary_dim % 2:
            raise ConversionError(
                f"config.json: n_embd {self.n_embd} over n_head {self.n_head} with rotary_dim {self.rotary_dim}"
                " is no GPT-J: heads must split n_embd evenly and rotary_dim must be even; fix config.json"
            )

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(self.hparam("n_positions", "max_position_embeddings", default=2048))
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head)
        writer.add_rope_dimension_count(self.rotary_dim)
        writer.add_rope_freq_base(10000.0)  # fixed in GPT-J's sinusoidal positions
        writer.add_layer_norm_eps(self.hparam("layer_norm_epsilon", default=1e-5))

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        return {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.OUTPUT_NORM: (self.n_embd,),
            T.ATTN_NORM: (self.n_embd,),
            T.ATTN_Q: (self.n_embd, self.n_embd),
            T.ATTN_K: (self.n_embd, self.n_embd),
            T.ATTN_V: (self.n_embd, self.n_embd),
            T.ATTN_OUT: (self.n_embd, self.n_embd),
            T.FFN_UP: (self.n_ff, self.n_embd),
            T.FFN_DOWN: (self.n_embd, self.n_ff),
        }

    def row_order(self, tensor: gguf.MODEL_TENSOR, rows: int) -> np.ndarray | None:
        if tensor in (T.ATTN_Q, T.ATTN_K):
            return _neox_rotary_order(rows, self.head_dim, self.rotary_dim)
        return None


ARCHITECTURE = GPTJ
