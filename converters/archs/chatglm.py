"""ChatGLM2-6B and ChatGLM3-6B (THUDM's remote-code `ChatGLMModel`) -> GGUF `chatglm`.

RMSNorm, multi-query attention with a fused [Q | K | V] projection (with bias), rotary embedding on
interleaved pairs of the first half of each head (llama.cpp's NORM rope over head_dim / 2 dims, base
10000 * rope_ratio), and SwiGLU on a fused dense_h_to_4h whose first half is the gate.

The fused QKV is written as separate Q, K and V (llama.cpp's chatglm graph takes either), so the
quantizer's per-tensor rules (a wider type for attn_v) apply. The fused gate and up projection stays
whole: the chatglm graph reads ffn_up as [gate | up] (2 * ffn_hidden_size rows) and has no ffn_gate.

The vocabulary is the SentencePiece tokenizer.model followed by the command tokens ChatGLM's own
tokenizer code appends (not in any data file), written as control tokens; see TOKENIZER.
"""

from __future__ import annotations

import gguf

from ..chatglm_cpp import is_glm_v1
from ..errors import ConversionError
from ..tokenizer import TokenizerHints
from .base import Architecture, T

# tokenization_chatglm.py (SPTokenizer) gives these ids right after the SentencePiece pieces, in this
# order. ChatGLM2's tokenizer stops after "eop"; its embedding has rows for all of them (padded).
COMMAND_TOKENS = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)


class ChatGLM(Architecture):
    hf_architectures = ("ChatGLMModel", "ChatGLMForConditionalGeneration")
    gguf_arch = gguf.MODEL_ARCH.CHATGLM
    default_pre = "default"
    name_prefix = "transformer."
    dropped_suffixes = ("rotary_pos_emb.inv_freq",)
    global_tensors = (T.TOKEN_EMBD, T.OUTPUT_NORM, T.OUTPUT)
    block_tensors = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN)
    # No BOS: prompts start with the [gMASK]sop text of the chat template. ChatGLM3 ends a turn by
    # starting the user's (<|user|>) or by calling a tool and waiting for its result (<|observation|>,
    # the role llama.cpp's eom token plays).
    tokenizer = TokenizerHints(
        appended_controls=COMMAND_TOKENS, add_bos=False, special_tokens={"eot": "<|user|>", "eom": "<|observation|>"}
    )

    def __init__(self, config: dict) -> None:
        if is_glm_v1(config):
            raise ConversionError(
                "config.json: position_encoding_2d is true, so this is ChatGLM-6B v1, which llama.cpp cannot run;"
                " convert_chatglm writes chatglm.cpp's model file for it (zootui convert does by itself)"
            )
        super().__init__(config)
        self.n_embd = self.hparam("hidden_size")
        self.n_head = self.hparam("num_attention_heads")
        self.head_dim = self.hparam("kv_channels", default=self.n_embd // self.n_head)
        multi_query = self.hparam("multi_query_attention", default=False)
        self.n_head_kv = self.hparam("multi_query_group_num") if multi_query else self.n_head
        self.n_ff = self.hparam("ffn_hidden_size")
        self.rope_ratio = float(self.hparam("rope_ratio", default=1.0))
        self._check_variant()

    def _check_variant(self) -> None:
        """The configurations llama.cpp's chatglm graph computes; anything else would convert into a wrong model."""
        if self.head_dim % 4 or self.n_head % self.n_head_kv:
            raise ConversionError(
                f"config.json: kv_channels {self.head_dim} with {self.n_head} heads in {self.n_head_kv} groups is no"
                " ChatGLM: rotary pairs need kv_channels divisible by 4 and the groups must split the heads; fix config.json"
            )
        if self.head_dim * self.n_head != self.n_embd:
            raise ConversionError(
                f"config.json: kv_channels × num_attention_heads ({self.head_dim} × {self.n_head}) differs from"
                f" hidden_size ({self.n_embd}); llama.cpp's chatglm graph needs them equal"
            )
        required = {
            "rmsnorm": True,
            "add_bias_linear": False,
            "apply_residual_connection_post_layernorm": False,
            "post_layer_norm": True,
        }
        for key, value in required.items():
            if self.hparam(key, default=value) != value:
                raise ConversionError(
                    f"config.json: {key} is {self.config[key]!r}; llama.cpp's chatglm graph supports only {value!r}"
                    " (ChatGLM2/3 as released)"
                )

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(self.hparam("seq_length", default=2048))
        writer.add_embedding_length(self.n_embd)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head_kv)
        writer.add_layer_norm_rms_eps(self.hparam("layernorm_epsilon", default=1e-5))
        writer.add_rope_dimension_count(self.head_dim // 2)
        # ChatGLM3's long-context releases multiply the rope base by rope_ratio, as llama.cpp's
        # converter does for every ChatGLM. ChatGLM2-6B-32K instead divides positions by it (not in
        # the catalog; it would need linear rope scaling).
        writer.add_rope_freq_base(10000.0 * self.rope_ratio)

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        kv_rows = self.n_head_kv * self.head_dim
        return {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.OUTPUT_NORM: (self.n_embd,),
            T.ATTN_NORM: (self.n_embd,),
            T.ATTN_QKV: (self.n_embd + 2 * kv_rows, self.n_embd),
            T.ATTN_OUT: (self.n_embd, self.n_embd),
            T.FFN_NORM: (self.n_embd,),
            T.FFN_UP: (2 * self.n_ff, self.n_embd),
            T.FFN_DOWN: (self.n_embd, self.n_ff),
        }

    def split_rows(self, tensor: gguf.MODEL_TENSOR) -> list[tuple[gguf.MODEL_TENSOR, int]] | None:
        if tensor != T.ATTN_QKV:
            return None
        kv_rows = self.n_head_kv * self.head_dim
        return [(T.ATTN_Q, self.n_embd), (T.ATTN_K, kv_rows), (T.ATTN_V, kv_rows)]


ARCHITECTURE = ChatGLM
