"""T5 encoder-decoder (ChatYuan-large v1/v2; T5 v1.0 and v1.1, Flan-T5) -> GGUF `t5`.

llama.cpp picks the feed-forward from the tensors: a gate tensor (v1.1's wi_0) means gated GELU (tanh
approximation, HF's gelu_new), no gate means ReLU (v1.0's wi). Only block 0 carries the relative
attention bias; llama.cpp reuses it in every block, as Hugging Face does, and computes the buckets
with a maximum distance of 128 it does not read from the file.

A tied head (v1.0, and any config without ``tie_word_embeddings: false``) is the shared embedding,
and Hugging Face scales the decoder output by d_model**-0.5 before it; llama.cpp has no such step,
so the scale is folded into a separate ``output.weight``.
"""

from __future__ import annotations

import gguf

from ..errors import ConversionError
from .base import MAX_BLOCKS, Architecture, PlannedTensor, T

# Where a checkpoint keeps its one token embedding, in order of preference: transformers 4.x saved
# the tied copies as well, all three equal.
EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
HEAD_NAME = "lm_head.weight"
LLAMA_CPP_MAX_DISTANCE = 128  # llama_relative_position_bucket's constant
FEED_FORWARDS = {"relu": False, "gated-gelu": True}  # feed_forward_proj -> gated

ENCODER_BLOCK = (T.ENC_ATTN_NORM, T.ENC_ATTN_Q, T.ENC_ATTN_K, T.ENC_ATTN_V, T.ENC_ATTN_OUT, T.ENC_FFN_NORM)
DECODER_BLOCK = (
    T.DEC_ATTN_NORM,
    T.DEC_ATTN_Q,
    T.DEC_ATTN_K,
    T.DEC_ATTN_V,
    T.DEC_ATTN_OUT,
    T.DEC_CROSS_ATTN_NORM,
    T.DEC_CROSS_ATTN_Q,
    T.DEC_CROSS_ATTN_K,
    T.DEC_CROSS_ATTN_V,
    T.DEC_CROSS_ATTN_OUT,
    T.DEC_FFN_NORM,
)


class T5(Architecture):
    hf_architectures = ("T5ForConditionalGeneration", "T5WithLMHeadModel")
    gguf_arch = gguf.MODEL_ARCH.T5
    global_tensors = (T.TOKEN_EMBD, T.OUTPUT, T.ENC_OUTPUT_NORM, T.DEC_OUTPUT_NORM)

    def __init__(self, config: dict) -> None:
        self.config = config
        self.n_encoder_layer = self.hparam("num_layers", maximum=MAX_BLOCKS)
        self.n_decoder_layer = self.hparam("num_decoder_layers", default=self.n_encoder_layer, maximum=MAX_BLOCKS)
        if self.n_decoder_layer > self.n_encoder_layer:
            raise ConversionError(
                f"config.json has {self.n_decoder_layer} decoder blocks and {self.n_encoder_layer} encoder blocks;"
                " llama.cpp cannot load a T5 with more decoder than encoder blocks"
            )
        self.n_layer = self.n_encoder_layer
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layer)
        self.n_embd = self.hparam("d_model")
        self.n_head = self.hparam("num_heads")
        self.head_dim = self.hparam("d_kv")
        self.n_ff = self.hparam("d_ff")
        self.n_buckets = self.hparam("relative_attention_num_buckets", default=32)
        feed_forward = self.hparam("feed_forward_proj", default="relu")
        if feed_forward not in FEED_FORWARDS:
            raise ConversionError(
                f"config.json feed_forward_proj is {feed_forward!r}; llama.cpp's t5 graph runs only {' or '.join(FEED_FORWARDS)}"
            )
        self.gated = FEED_FORWARDS[feed_forward]
        max_distance = self.hparam("relative_attention_max_distance", default=LLAMA_CPP_MAX_DISTANCE)
        if max_distance != LLAMA_CPP_MAX_DISTANCE:
            raise ConversionError(
                f"config.json relative_attention_max_distance is {max_distance}; llama.cpp computes position buckets"
                f" for {LLAMA_CPP_MAX_DISTANCE} only, so this model would run with the wrong attention bias"
            )
        # transformers 4.x: tied unless the config says otherwise (T5 v1.1 and ChatYuan say false).
        self.tied = self.hparam("tie_word_embeddings", default=True) is not False

    def add_hparams(self, writer: gguf.GGUFWriter, n_vocab: int) -> None:
        epsilon = self.hparam("layer_norm_epsilon", default=1e-6)
        writer.add_vocab_size(n_vocab)
        # Relative positions have no limit of their own; n_positions is what the model was trained at.
        writer.add_context_length(self.hparam("n_positions", default=512))
        writer.add_embedding_length(self.n_embd)
        writer.add_feed_forward_length(self.n_ff)
        writer.add_block_count(self.n_encoder_layer)
        writer.add_decoder_block_count(self.n_decoder_layer)
        writer.add_head_count(self.n_head)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_layer_norm_eps(epsilon)
        writer.add_layer_norm_rms_eps(epsilon)
        writer.add_relative_attn_buckets_count(self.n_buckets)
        writer.add_decoder_start_token_id(self.hparam("decoder_start_token_id", "pad_token_id", default=0, minimum=0))

    def weight_shapes(self, n_vocab: int) -> dict[gguf.MODEL_TENSOR, tuple[int, ...]]:
        inner = self.n_head * self.head_dim
        attention = {"NORM": (self.n_embd,), "Q": (inner, self.n_embd), "K": (inner, self.n_embd)}
        attention |= {"V": (inner, self.n_embd), "OUT": (self.n_embd, inner), "REL_B": (self.n_buckets, self.n_head)}
        feed_forward = {"NORM": (self.n_embd,), "GATE": (self.n_ff, self.n_embd), "UP": (self.n_ff, self.n_embd)}
        feed_forward |= {"DOWN": (self.n_embd, self.n_ff)}
        shapes = {
            T.TOKEN_EMBD: (n_vocab, self.n_embd),
            T.OUTPUT: (n_vocab, self.n_embd),
            T.ENC_OUTPUT_NORM: (self.n_embd,),
            T.DEC_OUTPUT_NORM: (self.n_embd,),
        }
        for prefix in ("ENC_ATTN", "DEC_ATTN", "DEC_CROSS_ATTN"):
            shapes |= {T[f"{prefix}_{part}"]: shape for part, shape in attention.items()}
        for prefix in ("ENC_FFN", "DEC_FFN"):
            shapes |= {
                T[f"{prefix}_{part}"]: shape for part, shape in feed_forward.items() if self.gated or part != "GATE"
            }
        return shapes

    def _embedding_source(self, checkpoint) -> str:
        names = set(checkpoint.names())
        for name in EMBEDDING_NAMES:
            if name in names:
                return name
        raise ConversionError(f"{checkpoint.directory} has no token embedding tensor; the checkpoint is incomplete")

    def vocab_rows(self, checkpoint) -> int:
        return checkpoint.info(self._embedding_source(checkpoint)).shape[0]

    def plan(self, checkpoint) -> list[PlannedTensor]:
        embedding = self._embedding_source(checkpoint)
        shapes = self.weight_shapes(self.vocab_rows(checkpoint))
        planned = self.planned_tensors(checkpoint, embedding, shapes, hf_name="shared.weight")
        for name in checkpoint.names():
            if name not in EMBEDDING_NAMES and not (self.tied and name == HEAD_NAME):
                planned.extend(self.planned_tensors(checkpoint, name, shapes))
        if self.tied:
            planned.append(PlannedTensor(embedding, "output.weight", planned[0].shape, scale=self.n_embd**-0.5))
        self._check_complete(planned)
        return planned

    def required_tensors(self) -> list[str]:
        ffn = ("GATE", "UP", "DOWN") if self.gated else ("UP", "DOWN")
        encoder = ENCODER_BLOCK + tuple(T[f"ENC_FFN_{part}"] for part in ffn)
        decoder = DECODER_BLOCK + tuple(T[f"DEC_FFN_{part}"] for part in ffn)
        required = [gguf.TENSOR_NAMES[t] + ".weight" for t in self.global_tensors]
        required += [gguf.TENSOR_NAMES[T.ENC_ATTN_REL_B].format(bid=0) + ".weight"]
        required += [gguf.TENSOR_NAMES[T.DEC_ATTN_REL_B].format(bid=0) + ".weight"]
        for blocks, tensors in ((self.n_encoder_layer, encoder), (self.n_decoder_layer, decoder)):
            required += [gguf.TENSOR_NAMES[t].format(bid=b) + ".weight" for b in range(blocks) for t in tensors]
        return required


ARCHITECTURE = T5
