"""The μLM: a decoder-only Llama/Swen transformer, exactly the shape ulm-runtime runs.

    from model import ModelConfig, Transformer
    model = Transformer(ModelConfig.preset("micro_8m"))
    logits = model(idx)                       # idx (B, T) int64 -> logits (B, T, vocab) f32

Pre-norm RMSNorm (computed in f32), RoPE in the rotate-half layout (HF/NEOX: the cos/sin tables
are the frequencies concatenated twice over the head dimension), grouped-query attention,
SwiGLU MLP `down(silu(gate(x)) * up(x))`, no biases, tied input embedding / LM head by default.
Module names mirror the HF Llama names so export.py is a plain rename.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------
# Config and presets


def ffn_width(hidden: int) -> int:
    """The FFN width rule of the family: 64 * ceil((8 * hidden / 3) / 64)."""
    return 64 * math.ceil((8 * hidden / 3) / 64)


@dataclass
class ModelConfig:
    vocab_size: int = 12288
    hidden_size: int = 256
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 2
    intermediate_size: int = 0  # 0 = the FFN width rule
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1e6
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.intermediate_size == 0:
            self.intermediate_size = ffn_width(self.hidden_size)
        if self.hidden_size % self.n_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @staticmethod
    def preset(name: str, **overrides) -> "ModelConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return ModelConfig(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    def n_params(self) -> int:
        """Parameter count from the shape alone (final norm included, a tied head counted once)."""
        h, kv = self.hidden_size, self.n_kv_heads * self.head_dim
        attn = 2 * h * h + 2 * h * kv  # q, o + k, v
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h  # + two norms
        embed = self.vocab_size * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + self.n_layers * per_layer + h + head


# The paper's three sizes (REFERENCE.md §2); `tiny` is for tests only.
PRESETS = {
    "micro_8m": dict(hidden_size=256, n_layers=8, n_heads=8, n_kv_heads=2),  # 8,786,176
    "micro_15m": dict(hidden_size=256, n_layers=16, n_heads=8, n_kv_heads=2),  # 14,426,368
    "micro_30m": dict(hidden_size=512, n_layers=8, n_heads=8, n_kv_heads=2),  # 28,844,544
    "tiny": dict(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, max_position_embeddings=256),
}


# ------------------------------------------------------------------------------------------------
# Blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # (dim,)

    def forward(self, x):
        # Normalise in f32 whatever the activation dtype, as the runtime does.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(head_dim: int, max_pos: int, theta: float):
    """cos, sin of shape (max_pos, head_dim): the frequencies concatenated twice (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)  # (max_pos, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (max_pos, head_dim)
    return emb.cos().float(), emb.sin().float()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    # x (B, H, T, D); cos, sin (T, D)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        h, kv = cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim
        self.q_proj = nn.Linear(h, h, bias=False)  # (h, h)
        self.k_proj = nn.Linear(h, kv, bias=False)  # (kv, h)
        self.v_proj = nn.Linear(h, kv, bias=False)  # (kv, h)
        self.o_proj = nn.Linear(h, h, bias=False)  # (h, h)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(h, f, bias=False)  # (f, h)
        self.up_proj = nn.Linear(h, f, bias=False)  # (f, h)
        self.down_proj = nn.Linear(f, h, bias=False)  # (h, f)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


# ------------------------------------------------------------------------------------------------
# The model


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # (vocab, h)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # Untied models get their own head; tied ones reuse the embedding matrix.
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_pos, D)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_pos, D)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # std 0.02 everywhere (the N(0,1) embedding default starts the loss near 240); the two
        # projections that write into the residual stream are scaled by 1/sqrt(2 * n_layers).
        std = 0.02
        nn.init.normal_(self.embed_tokens.weight, std=std)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=std)
        for name, p in self.layers.named_parameters():
            if name.endswith("layernorm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=std)
        nn.init.ones_(self.norm.weight)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied head is one tensor, counted once

    def head_weight(self):
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight  # (vocab, h)

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, vocab)."""
        T = idx.shape[1]
        if T > self.cfg.max_position_embeddings:
            raise ValueError(f"sequence of {T} tokens exceeds max_position_embeddings {self.cfg.max_position_embeddings}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D)
        x = self.embed_tokens(idx)  # (B, T, h)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        return F.linear(x, self.head_weight())  # (B, T, vocab)


def grow_depth(cfg: ModelConfig, state: dict, n_layers: int) -> tuple[ModelConfig, dict]:
    """A deeper model that starts out computing exactly what `state` computes (block expansion).

    Every layer i of the `cfg.n_layers` is followed by `n_layers / cfg.n_layers - 1` copies of
    itself whose two residual-writing projections (o_proj, down_proj) are zero, so each copy adds
    nothing to the residual stream until training moves those projections; everything else (norms,
    q/k/v, gate/up, embeddings, head) is copied. Used to start ulm-15m (16 layers) from ulm-8m (8).
    """
    if n_layers % cfg.n_layers or n_layers < cfg.n_layers:
        raise ValueError(f"cannot grow {cfg.n_layers} layers to {n_layers}: need a multiple of {cfg.n_layers}")
    k = n_layers // cfg.n_layers
    grown = {}
    for name, t in state.items():
        if not name.startswith("layers."):
            grown[name] = t.clone()
            continue
        _, i, rest = name.split(".", 2)
        silent = rest in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
        for c in range(k):
            grown[f"layers.{int(i) * k + c}.{rest}"] = torch.zeros_like(t) if c and silent else t.clone()
    return ModelConfig(**{**cfg.to_dict(), "n_layers": n_layers}), grown


def weighted_loss(logits, targets, weights, total_weight=None):
    """sum(w * ce) / sum(w): the loss of every target weighted by its class weight.

    logits (B, T, V), targets (B, T) int64, weights (B, T) f32. `total_weight` lets gradient
    accumulation divide every micro-batch by the weight of the whole batch, so accumulated
    gradients equal those of one big batch.
    """
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    w = weights.flatten().to(ce.dtype)
    denom = w.sum().clamp_min(1e-8) if total_weight is None else max(float(total_weight), 1e-8)
    return (w * ce).sum() / denom
