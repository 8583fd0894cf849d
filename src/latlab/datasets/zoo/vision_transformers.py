"""Vision transformers: ViT/DeiT (global attention over patches) and Swin (shifted windows).

Shaped as timm's and torchvision's implementations, whose parameter and MAC counts are the
published ones: ViT as torchvision's ``VisionTransformer`` / timm's ``vit_*_patch16_224``
(class token first, learned positions, pre-LN blocks, the class token's final state to the
head), Swin as torchvision's ``swin_s`` (patch partition, window attention with relative
position bias, cyclic shifts as Slice/Concat with constant masks, patch merging).
"""

from __future__ import annotations

from latlab.datasets.zoo.attention import attend, mlp, roll
from latlab.datasets.zoo.common import ResolutionError, ZooModel
from latlab.encoders.builder import NetBuilder


def vit_attention(b: NetBuilder, x: str, heads: int) -> str:
    """timm/torchvision attention: fused qkv -> (3, B, heads, N, hd) -> q, k, v by index."""
    bs, n, d = b.shape(x)
    qkv = b.reshape(b.linear(x, 3 * d), (bs, n, 3, heads, d // heads))
    qkv = b.transpose(qkv, (2, 0, 3, 1, 4))
    q, k, v = (b.gather(qkv, i, axis=0) for i in range(3))
    out = attend(b, q, b.transpose(k, (0, 1, 3, 2)), v, scale="q")
    out = b.reshape(b.transpose(out, (0, 2, 1, 3)), (bs, n, d))
    return b.linear(out, d)


def vit_builder(dim: int, depth: int, heads: int, patch: int = 16):
    def build(b: NetBuilder) -> str:
        """ViT (Dosovitskiy et al., 2021) / DeiT (Touvron et al., 2021): patch embedding
        convolution, class token, learned positions, pre-LN blocks (FFN 4·D, GELU), final LN,
        linear head on the class token."""
        bs, _, h, w = b.shape(b.input)
        if h % patch or w % patch:
            raise ResolutionError(f"the input {h}x{w} is not a multiple of the patch {patch}")
        x = b.conv(b.input, dim, patch, patch, padding=0, bias=True)
        n = (h // patch) * (w // patch)
        x = b.transpose(b.reshape(x, (bs, dim, n)), (0, 2, 1))
        x = b.prepend_token(x)
        x = b.add_weight(x, (1, n + 1, dim))
        for _ in range(depth):
            x = b.add(x, vit_attention(b, b.layernorm(x, 1e-6), heads))
            x = b.add(x, mlp(b, b.layernorm(x, 1e-6), 4 * dim))
        x = b.gather(b.layernorm(x, 1e-6), 0, axis=1)
        return b.gemm(x, 1000)

    return build


#: The name the registrations below use.


# --------------------------------------------------------------------------- Swin


def _window_attention(b: NetBuilder, x: str, heads: int, window: int, shift: int) -> str:
    """torchvision's ``shifted_window_attention`` on (B, H, W, C)."""
    bs, h, w, c = b.shape(x)
    if shift:
        x = roll(b, roll(b, x, -shift, 1), -shift, 2)
    nh, nw = h // window, w // window
    y = b.reshape(x, (bs, nh, window, nw, window, c))
    y = b.transpose(y, (0, 1, 3, 2, 4, 5))
    tokens = window * window
    windows = bs * nh * nw
    y = b.reshape(y, (windows, tokens, c))
    qkv = b.reshape(b.linear(y, 3 * c), (windows, tokens, 3, heads, c // heads))
    qkv = b.transpose(qkv, (2, 0, 3, 1, 4))
    q, k, v = (b.gather(qkv, i, axis=0) for i in range(3))
    q = b.scale(q, (c // heads) ** -0.5)
    scores = b.batched_matmul(q, b.transpose(k, (0, 1, 3, 2)))
    # Relative position bias: gathered from a ((2w-1)^2, heads) table (a constant at run time).
    table = (2 * window - 1) ** 2 * heads
    scores = b.add_weight(scores, (1, heads, tokens, tokens), stored_params=table)
    if shift:
        s5 = b.reshape(scores, (bs, nh * nw, heads, tokens, tokens))
        s5 = b.add_weight(s5, (1, nh * nw, 1, tokens, tokens), stored_params=0)
        scores = b.reshape(s5, (windows, heads, tokens, tokens))
    out = b.batched_matmul(b.softmax(scores, axis=-1), v)
    out = b.reshape(b.transpose(out, (0, 2, 1, 3)), (windows, tokens, c))
    out = b.linear(out, c)
    out = b.reshape(out, (bs, nh, nw, window, window, c))
    out = b.reshape(b.transpose(out, (0, 1, 3, 2, 4, 5)), (bs, h, w, c))
    if shift:
        out = roll(b, roll(b, out, shift, 1), shift, 2)
    return out


def _patch_merging(b: NetBuilder, x: str) -> str:
    """Concat the four 2x2-strided sub-grids, LN(4C), Linear 4C -> 2C without bias."""
    _, h, w, c = b.shape(x)
    parts = [
        b.slice(x, [i, j], [h, w], [1, 2], [2, 2]) for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))
    ]
    return b.linear(b.layernorm(b.concat(parts, axis=-1)), 2 * c, bias=False)


def _swin(dim: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int = 7):
    def build(b: NetBuilder) -> str:
        """Swin Transformer (Liu et al., 2021) as torchvision builds it: 4x4 patches, stages of
        window attention (window 7) alternating with shifted windows (shift 3, skipped where
        the map is no larger than the window), patch merging between stages, mean pool."""
        _, _, res, _ = b.shape(b.input)
        if res % 32 or (res // 32) % window:
            raise ResolutionError(
                f"Swin needs a resolution whose /32 map is a multiple of the window {window}"
            )
        x = b.conv(b.input, dim, 4, 4, padding=0, bias=True)
        x = b.layernorm(b.transpose(x, (0, 2, 3, 1)))
        for stage, (depth, h) in enumerate(zip(depths, heads, strict=True)):
            if stage:
                x = _patch_merging(b, x)
            size = b.shape(x)[1]
            for i in range(depth):
                shift = window // 2 if i % 2 and size > window else 0
                x = b.add(x, _window_attention(b, b.layernorm(x), h, window, shift))
                x = b.add(x, mlp(b, b.layernorm(x), 4 * b.shape(x)[-1]))
        x = b.layernorm(x)
        x = b.reduce_mean(x, (1, 2))
        return b.gemm(x, 1000)

    return build


VIT_S16 = ZooModel(
    "vit_s16",
    "vit",
    vit_builder(384, 12, 6),
    "Dosovitskiy et al. 2021",
    min_resolution=32,
    attention=True,
)
DEIT_S16 = ZooModel(
    "deit_s16",
    "deit",
    vit_builder(384, 12, 6),
    "Touvron et al. 2021",
    min_resolution=32,
    attention=True,
)
VIT_B16 = ZooModel(
    "vit_b16",
    "vit",
    vit_builder(768, 12, 12),
    "Dosovitskiy et al. 2021",
    min_resolution=32,
    attention=True,
)
SWIN_S = ZooModel(
    "swin_s",
    "swin",
    _swin(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "Liu et al. 2021",
    min_resolution=224,
    attention=True,
)
