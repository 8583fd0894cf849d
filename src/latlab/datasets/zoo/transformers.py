"""Text and speech transformers: BERT, ALBERT, GPT-2, a Llama-style decoder, the T5 encoder
and the Whisper-tiny encoder.

Written from their papers, shaped as the Hugging Face ``transformers`` implementations (whose
parameter counts are the published ones) export to ONNX without a KV cache: the input is int64
token ids (B, S) (``zoo:NAME@S`` sets the sequence length S), the output the last hidden states
(encoders, with BERT's and ALBERT's pooler) or the logits of every position (decoders).

Constant inputs a tokenizer would supply are folded as onnxruntime folds them: position and
token-type embeddings are the rows of their tables the sequence reads (weights (1, S, D) whose
``stored_params`` are the whole tables), causal masks and rotary tables are constant buffers (no
parameters). Each tensor shared between layers counts once (GPT-2's tied LM head, ALBERT's
shared encoder layer). The Whisper encoder takes a float log-mel spectrogram (B, 80, N);
``@N`` is its number of frames (3,000 = 30 s, the reference input).
"""

from __future__ import annotations

from collections.abc import Callable

from latlab.datasets.zoo.attention import (
    attend,
    merge_heads,
    mlp,
    self_attention,
    split_heads,
    swiglu,
)
from latlab.datasets.zoo.common import ZooModel
from latlab.encoders.builder import NetBuilder


def embed(b: NetBuilder, vocab: int, dim: int, positions: int, token_types: int = 0) -> str:
    """Word embedding + (token-type) + learned absolute positions, as BERT/GPT-2 add them."""
    s = b.shape(b.input)[1]
    x = b.embedding(b.input, vocab, dim)
    if token_types:
        x = b.add_weight(x, (1, s, dim), stored_params=token_types * dim)
    return b.add_weight(x, (1, s, dim), stored_params=positions * dim)


def _pooler(b: NetBuilder, x: str) -> str:
    """BERT's pooler: the first token's hidden state through Linear + Tanh."""
    first = b.gather(x, 0, axis=1)  # (B, D)
    return b.act(b.gemm(first, b.shape(first)[-1]), "Tanh")


def bert_encoder(b: NetBuilder, x: str, layers: int, heads: int, ffn: int, eps: float) -> str:
    """Post-LN encoder layers: x = LN(x + attn(x)); x = LN(x + ffn(x))."""
    for _ in range(layers):
        x = b.layernorm(b.add(x, self_attention(b, x, heads)), eps)
        x = b.layernorm(b.add(x, mlp(b, x, ffn)), eps)
    return x


def _bert(layers: int, dim: int, heads: int):
    def build(b: NetBuilder) -> str:
        """BERT (Devlin et al., 2019; miniatures: Turc et al., 2019): WordPiece vocabulary
        30,522, 512 positions, 2 token types, post-LN layers with FFN 4·D, and the pooler."""
        x = b.layernorm(embed(b, 30522, dim, 512, token_types=2), 1e-12)
        x = bert_encoder(b, x, layers, heads, 4 * dim, 1e-12)
        return _pooler(b, x)

    return build


def albert_base(b: NetBuilder) -> str:
    """ALBERT-base (Lan et al., 2020): factorised embeddings (30,000 x 128, projected to 768)
    and one encoder layer shared by all 12 (its weights counted once), 12 heads, FFN 3072."""
    x = b.layernorm(embed(b, 30000, 128, 512, token_types=2), 1e-12)
    x = b.linear(x, 768)
    for _ in range(12):
        with b.shared("albert_layer"):
            x = bert_encoder(b, x, 1, 12, 3072, 1e-12)
    return _pooler(b, x)


def gpt2_medium(b: NetBuilder) -> str:
    """GPT-2 medium (Radford et al., 2019): 24 pre-LN layers, width 1024, 16 heads, fused QKV
    projection, causal mask, ``gelu_new`` (tanh) FFN 4096, final LN and the LM head tied to the
    token embedding (vocabulary 50,257; 1,024 positions). No KV cache: every position's
    logits are computed."""
    dim = 1024
    x = embed(b, 50257, dim, 1024)
    for _ in range(24):
        x = b.add(x, self_attention(b, b.layernorm(x), 16, fused_qkv=True, mask=True))
        x = b.add(x, mlp(b, b.layernorm(x), 4 * dim, act="gelu_tanh"))
    x = b.layernorm(x)
    # The LM head reads the embedding table (tied): its parameters are already counted.
    return b.add_layer("MatMul", [x], {"stored_params": 0}, [(dim, 50257)])[0]


def llama_8l512(b: NetBuilder) -> str:
    """A Llama-style decoder (Touvron et al., 2023) at a small scale: 8 layers, width 512,
    8 heads of 64, RMSNorm (eps 1e-6), rotary position embeddings on Q and K, causal mask, no
    biases, SwiGLU FFN 1536 (Llama's 2/3·4·D rounded up to a multiple of 256), vocabulary
    32,000, untied LM head."""
    dim = 512
    x = b.embedding(b.input, 32000, dim)
    for _ in range(8):
        h = self_attention(b, b.rmsnorm(x), 8, bias=False, mask=True, rotary=True)
        x = b.add(x, h)
        x = b.add(x, swiglu(b, b.rmsnorm(x), 1536))
    return b.linear(b.rmsnorm(x), 32000, bias=False)


def t5_small_encoder(b: NetBuilder) -> str:
    """The encoder of T5-small (Raffel et al., 2020): 6 pre-norm layers, width 512, 8 heads,
    RMS layer norm without bias (eps 1e-6), unscaled attention scores plus a relative position
    bias (32 buckets x 8 heads, computed once and shared by every layer), ReLU FFN 2048, no
    biases, vocabulary 32,128."""
    dim, heads = 512, 8
    x = b.embedding(b.input, 32128, dim)
    for i in range(6):
        h = b.rmsnorm(x)
        h = _t5_attention(b, h, heads, bias_params=32 * heads if i == 0 else 0)
        x = b.add(x, h)
        x = b.add(x, mlp(b, b.rmsnorm(x), 2048, act="relu", bias=False))
    return b.rmsnorm(x)


def _t5_attention(b: NetBuilder, x: str, heads: int, bias_params: int) -> str:
    _, s, d = b.shape(x)
    q = split_heads(b, b.linear(x, d, bias=False), heads)
    k_t = split_heads(b, b.linear(x, d, bias=False), heads, keys=True)
    v = split_heads(b, b.linear(x, d, bias=False), heads)
    out = attend(b, q, k_t, v, scale="none", bias=(1, heads, s, s), bias_params=bias_params)
    return b.linear(merge_heads(b, out), d, bias=False)


def whisper_tiny_encoder(b: NetBuilder) -> str:
    """The encoder of Whisper tiny (Radford et al., 2022): log-mel input (B, 80, frames), two
    1-D convolutions (k3; the second stride 2) with GELU, sinusoidal positions (1,500 rows,
    stored as weights by the reference implementation), 4 pre-LN layers of width 384 with 6
    heads (no key bias), GELU FFN 1536, final LN."""
    dim = 384
    mels = b.shape(b.input)[1]
    x = b.input
    for cin, stride in ((mels, 1), (dim, 2)):
        attrs = {"kernel": (3,), "stride": (stride,), "pads": (1, 1), "dilation": (1,), "groups": 1}
        x = b.add_layer("Conv", [x], attrs, [(dim, cin, 3), (dim,)])[0]
        x = b.gelu(x)
    x = b.transpose(x, (0, 2, 1))  # (B, frames / 2, 384)
    x = b.add_weight(x, (1, b.shape(x)[1], dim), stored_params=1500 * dim)
    for _ in range(4):
        x = b.add(x, self_attention(b, b.layernorm(x), 6, kv_bias=False))
        x = b.add(x, mlp(b, b.layernorm(x), 4 * dim))
    return b.layernorm(x)


def _text(
    name: str,
    family: str,
    build: Callable[[NetBuilder], object],
    paper: str,
    length: int,
    positions: int,
) -> ZooModel:
    """A text model: token-id input, default sequence ``length``, at most ``positions``
    tokens (its position table)."""
    return ZooModel(
        name,
        family,
        build,
        paper,
        resolution=length,
        min_resolution=1,
        inputs="tokens",
        max_resolution=positions,
        attention=True,
    )


BERT_MEDIUM = _text(
    "bert_medium", "bert", _bert(8, 512, 8), "Turc et al. 2019; Devlin et al. 2019", 128, 512
)
BERT_LARGE = _text("bert_large", "bert", _bert(24, 1024, 16), "Devlin et al. 2019", 64, 512)
ALBERT_BASE = _text("albert_base", "albert", albert_base, "Lan et al. 2020", 128, 512)
GPT2_MEDIUM = _text("gpt2_medium", "gpt", gpt2_medium, "Radford et al. 2019", 64, 1024)
LLAMA_8L512 = _text(
    "llama_8l512",
    "llama",
    llama_8l512,
    "Touvron et al. 2023 (architecture; scaled to 8 layers, width 512)",
    128,
    4096,
)
T5_SMALL_ENCODER = _text("t5_small_encoder", "t5", t5_small_encoder, "Raffel et al. 2020", 128, 512)
WHISPER_TINY_ENCODER = ZooModel(
    "whisper_tiny_encoder",
    "whisper",
    whisper_tiny_encoder,
    "Radford et al. 2022",
    resolution=3000,
    min_resolution=2,
    inputs="mel",
    max_resolution=3000,
    attention=True,
)
