"""Transformer building blocks shared by the zoo's text and vision transformers.

Each block is written as the reference implementation's PyTorch code exports to ONNX (opset
17), op for op, so that the graphs onnxruntime optimises are the ones real exported files give
it: ``nn.Linear`` on a 3-D input is ``MatMul`` + bias ``Add``; attention reshapes and transposes
to (B, heads, S, head_dim), multiplies two activations (``Q·Kᵀ`` with ``K`` transposed,
``P·V``), scales, masks and takes a ``Softmax``; GELU is the erf (or tanh) form. Dropout is an
identity at inference and absent.
"""

from __future__ import annotations

import math

from latlab.encoders.builder import NetBuilder


def split_heads(b: NetBuilder, x: str, heads: int, *, keys: bool = False) -> str:
    """(B, S, D) -> (B, heads, S, head_dim); ``keys``: (B, heads, head_dim, S) directly
    (HF BERT's ``k.permute(0, 2, 3, 1)`` form)."""
    bs, s, d = b.shape(x)
    y = b.reshape(x, (bs, s, heads, d // heads))
    return b.transpose(y, (0, 2, 3, 1) if keys else (0, 2, 1, 3))


def merge_heads(b: NetBuilder, x: str) -> str:
    """(B, heads, S, head_dim) -> (B, S, D)."""
    bs, h, s, hd = b.shape(x)
    return b.reshape(b.transpose(x, (0, 2, 1, 3)), (bs, s, h * hd))


def causal_mask(b: NetBuilder, scores: str) -> str:
    """Add a constant (1, 1, S, S) additive causal mask (a buffer: no parameters)."""
    s = b.shape(scores)[-1]
    return b.add_weight(scores, (1, 1, s, s), stored_params=0)


def attend(
    b: NetBuilder,
    q: str,
    k_t: str,
    v: str,
    *,
    scale: str = "div",
    mask: bool = False,
    bias: tuple[int, ...] | None = None,
    bias_params: int | None = None,
) -> str:
    """softmax(Q·Kᵀ·scale [+ bias] [+ causal mask])·V on (B, heads, S, head_dim) tensors.

    ``scale``: ``"div"`` divides the scores by √head_dim (HF BERT/GPT-2/Llama), ``"q"``
    multiplies Q first (timm/torchvision ViT, Swin), ``"none"`` skips it (T5). ``bias`` adds a
    weight of that shape (relative position bias; ``bias_params`` stored values).
    """
    hd = b.shape(q)[-1]
    if scale == "q":
        q = b.scale(q, hd**-0.5)
    scores = b.batched_matmul(q, k_t)
    if scale == "div":
        scores = b.add_layer("Div", [scores], {"scalar_inputs": ((1, math.sqrt(hd)),)})[0]
    if bias is not None:
        scores = b.add_weight(scores, bias, stored_params=bias_params)
    if mask:
        scores = causal_mask(b, scores)
    return b.batched_matmul(b.softmax(scores, axis=-1), v)


def self_attention(
    b: NetBuilder,
    x: str,
    heads: int,
    *,
    fused_qkv: bool = False,
    bias: bool = True,
    mask: bool = False,
    rotary: bool = False,
    scale: str = "div",
    kv_bias: bool | None = None,
) -> str:
    """Multi-head self-attention of (B, S, D) with its output projection.

    ``fused_qkv``: one D -> 3D projection split into Q, K, V (GPT-2's ``c_attn``); otherwise
    three projections (BERT, Llama, Whisper; ``kv_bias=False`` drops the key bias as Whisper
    does). ``rotary``: rotary embeddings on Q and K (Llama).
    """
    d = b.shape(x)[-1]
    if fused_qkv:
        qkv = b.linear(x, 3 * d, bias=bias)
        q_, k_, v_ = b.split(qkv, (d, d, d), axis=-1)
    else:
        q_ = b.linear(x, d, bias=bias)
        k_ = b.linear(x, d, bias=bias if kv_bias is None else kv_bias)
        v_ = b.linear(x, d, bias=bias)
    q = split_heads(b, q_, heads)
    v = split_heads(b, v_, heads)
    if rotary:
        q = b.rotary(q)
        k_t = b.transpose(b.rotary(split_heads(b, k_, heads)), (0, 1, 3, 2))
    else:
        k_t = split_heads(b, k_, heads, keys=True)
    out = attend(b, q, k_t, v, scale=scale, mask=mask)
    return b.linear(merge_heads(b, out), d, bias=bias)


def mlp(b: NetBuilder, x: str, hidden: int, act: str = "gelu", bias: bool = True) -> str:
    """Linear, activation (gelu, gelu_tanh, relu), Linear back to the input width."""
    d = b.shape(x)[-1]
    h = b.linear(x, hidden, bias=bias)
    if act == "gelu":
        h = b.gelu(h)
    elif act == "gelu_tanh":
        h = b.gelu(h, approximate="tanh")
    elif act == "relu":
        h = b.relu(h)
    else:
        raise ValueError(f"unknown activation {act!r}")
    return b.linear(h, d, bias=bias)


def swiglu(b: NetBuilder, x: str, hidden: int) -> str:
    """Llama's feed-forward: down(silu(gate(x)) * up(x)), no biases (SiLU as Sigmoid, Mul)."""
    d = b.shape(x)[-1]
    gate = b.swish(b.linear(x, hidden, bias=False))
    up = b.linear(x, hidden, bias=False)
    return b.linear(b.mul(gate, up), d, bias=False)


def roll(b: NetBuilder, x: str, shift: int, axis: int) -> str:
    """``torch.roll(x, shift, axis)`` as exported: two Slices and a Concat."""
    n = b.shape(x)[axis]
    s = shift % n
    if s == 0:
        return x
    head = b.slice(x, [n - s], [n], [axis])
    tail = b.slice(x, [0], [n - s], [axis])
    return b.concat([head, tail], axis=axis)
