"""The architecture: preset sizes, and each fused op against a slow, obvious twin."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import PRESETS, ModelConfig, RMSNorm, Transformer, apply_rope, ffn_width, grow_depth, rope_tables

ATOL_F32 = 1e-5

EXPECTED_PARAMS = {"micro_8m": 8_786_176, "micro_15m": 14_426_368, "micro_30m": 28_844_544}


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_preset_parameter_counts(name):
    cfg = ModelConfig.preset(name)
    assert cfg.vocab_size == 12288 and cfg.max_position_embeddings == 1024
    assert cfg.n_params() == EXPECTED_PARAMS[name]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = Transformer(cfg)
    assert model.n_params() == EXPECTED_PARAMS[name]


def test_ffn_rule_and_shapes():
    assert ffn_width(256) == 704 and ffn_width(512) == 1408
    assert ModelConfig.preset("micro_30m").head_dim == 64
    assert set(PRESETS) >= {"micro_8m", "micro_15m", "micro_30m"}


def test_untied_model_has_its_own_head():
    cfg = ModelConfig.preset("tiny", vocab_size=64, tie_word_embeddings=False)
    model = Transformer(cfg)
    assert model.n_params() == cfg.n_params() == ModelConfig.preset("tiny", vocab_size=64).n_params() + 64 * 64
    assert model.head_weight() is not model.embed_tokens.weight


def test_tied_head_is_the_embedding_and_init_is_small():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("micro_8m"))
    assert model.head_weight() is model.embed_tokens.weight
    assert abs(model.embed_tokens.weight.std().item() - 0.02) < 1e-3
    o = model.layers[0].self_attn.o_proj.weight.std().item()
    assert abs(o - 0.02 / math.sqrt(16)) < 1e-3
    # At init the loss is near ln(vocab), not hundreds.
    idx, targets = torch.randint(0, 12288, (2, 16))
    with torch.no_grad():
        loss = F.cross_entropy(model(idx[None])[0], targets)
    assert abs(loss.item() - math.log(12288)) < 0.5


def test_rmsnorm_matches_formula_and_runs_in_f32():
    norm = RMSNorm(8, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(8.0))
    x = torch.randn(3, 8)
    ref = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * torch.arange(8.0)
    torch.testing.assert_close(norm(x), ref, atol=ATOL_F32, rtol=0)
    # f16 input: normalised in f32, so no overflow on large activations.
    big = torch.full((1, 8), 300.0, dtype=torch.float16)
    assert torch.isfinite(norm(big)).all()


def test_rope_is_rotate_half_with_pairs_i_and_i_plus_half():
    head_dim, theta = 8, 1e6
    cos, sin = rope_tables(head_dim, 5, theta)
    assert torch.equal(cos[:, :4], cos[:, 4:])  # frequencies concatenated twice
    x = torch.randn(1, 1, 5, head_dim)
    got = apply_rope(x, cos, sin)
    ref = x.clone()
    for pos in range(5):
        for i in range(head_dim // 2):
            angle = pos / theta ** (2 * i / head_dim)
            a, b = x[0, 0, pos, i], x[0, 0, pos, i + head_dim // 2]
            ref[0, 0, pos, i] = a * math.cos(angle) - b * math.sin(angle)
            ref[0, 0, pos, i + head_dim // 2] = b * math.cos(angle) + a * math.sin(angle)
    torch.testing.assert_close(got, ref, atol=ATOL_F32, rtol=0)


def naive_forward(model: Transformer, idx):
    """The same model written out op by op: explicit GQA head repeat and a causal mask."""
    cfg = model.cfg
    B, T = idx.shape
    cos, sin = rope_tables(cfg.head_dim, T, cfg.rope_theta)

    def norm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    x = model.embed_tokens.weight[idx]
    for layer in model.layers:
        a = layer.self_attn
        h = norm(x, layer.input_layernorm.weight)
        q = (h @ a.q_proj.weight.T).view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = (h @ a.k_proj.weight.T).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = (h @ a.v_proj.weight.T).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = cfg.n_heads // cfg.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.head_dim)
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + y @ a.o_proj.weight.T
        h = norm(x, layer.post_attention_layernorm.weight)
        m = layer.mlp
        x = x + (F.silu(h @ m.gate_proj.weight.T) * (h @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    return norm(x, model.norm.weight) @ model.head_weight().T


def test_forward_matches_naive_twin():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=64))
    with torch.no_grad():  # non-trivial norms so their weights are exercised
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    idx = torch.randint(0, 64, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), naive_forward(model, idx), atol=ATOL_F32, rtol=1e-4)


def test_causal_prefix_logits_do_not_depend_on_the_future():
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=64))
    idx = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[:, :7], model(idx[:, :7]), atol=ATOL_F32, rtol=1e-4)


def test_grown_model_computes_what_it_grew_from_then_learns_in_its_new_layers():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", vocab_size=64)
    small = Transformer(cfg)
    with torch.no_grad():  # trained-looking weights: no zeros anywhere
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg3, state = grow_depth(cfg, small.state_dict(), 3 * cfg.n_layers)
    big = Transformer(cfg3)
    big.load_state_dict(state)
    assert cfg3.n_layers == 6 and big.n_params() == ModelConfig.preset("tiny", vocab_size=64, n_layers=6).n_params()
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(big(idx), small(idx), atol=ATOL_F32, rtol=0)
    # Layer 1 is layer 0's copy: same q, zero output projections, so its gradient lands on them.
    assert torch.equal(big.layers[1].self_attn.q_proj.weight, small.layers[0].self_attn.q_proj.weight)
    assert big.layers[1].mlp.down_proj.weight.abs().sum() == 0
    assert torch.equal(big.layers[3].mlp.down_proj.weight, small.layers[1].mlp.down_proj.weight)
    F.cross_entropy(big(idx).flatten(0, 1), idx.flatten()).backward()
    assert big.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiple of 2"):
        grow_depth(cfg, small.state_dict(), 5)
