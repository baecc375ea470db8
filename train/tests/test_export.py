"""Export: HF names and shapes, a loadable model.safetensors, and the logits dump."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import train
from conftest import FIXTURE_VOCAB, TRAIN_DIR
from export import dump_logits, export, load_ckpt_model, load_hf
from model import ModelConfig, Transformer


@pytest.fixture
def run_dir(data_dir, tmp_path):
    out = tmp_path / "run"
    train.main(["--data", str(data_dir), "--out", str(out), "--preset", "tiny", "--seq-len", "32",
                "--batch-size", "4", "--max-steps", "3", "--eval-every", "0", "--threads", "1"])
    return out


def expected_names(n_layers, tied=True):
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(n_layers):
        names |= {f"model.layers.{i}.self_attn.{p}_proj.weight" for p in "qkvo"}
        names |= {f"model.layers.{i}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
        names |= {f"model.layers.{i}.input_layernorm.weight", f"model.layers.{i}.post_attention_layernorm.weight"}
    return names if tied else names | {"lm_head.weight"}


def test_export_f32_round_trips_exactly(run_dir, tmp_path):
    out = tmp_path / "export"
    export(str(run_dir), str(out), "f32")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (64, 192, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 2, 16)
    assert (cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"]) == (FIXTURE_VOCAB, 1, 2)
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32"
    assert cfg["rope_theta"] == 1e6 and cfg["rms_norm_eps"] == 1e-5
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == expected_names(2)
        assert f.get_slice("model.embed_tokens.weight").get_shape() == [FIXTURE_VOCAB, 64]
        assert f.get_slice("model.layers.1.self_attn.k_proj.weight").get_shape() == [32, 64]
        assert f.get_slice("model.layers.0.mlp.down_proj.weight").get_shape() == [64, 192]
        assert f.get_slice("model.norm.weight").get_dtype() == "F32"

    ids = [1, 3, 20, 30, 40, 50, 2, 1, 4]
    original, _ = load_ckpt_model(str(run_dir))
    loaded = load_hf(str(out))
    with torch.no_grad():
        assert torch.equal(original(torch.tensor([ids])), loaded(torch.tensor([ids])))


def test_init_from_an_export_folder_starts_from_its_weights(run_dir, tmp_path, data_dir):
    """Committed weights can seed a new run when the checkpoints are gone (--init models/ulm-8m)."""
    out = tmp_path / "export"
    export(str(run_dir), str(out), "f32")
    init = train.load_init(str(out))
    original, _ = load_ckpt_model(str(run_dir))
    assert init["model_config"] == original.cfg.to_dict()
    assert all(torch.equal(init["model"][k], v) for k, v in original.state_dict().items())
    # and a run actually starts from them: one warm-up step moves no weight by more than ~lr/200
    sft = tmp_path / "sft"
    assert train.main(["--data", str(data_dir), "--out", str(sft), "--init", str(out), "--seq-len", "32",
                       "--batch-size", "4", "--max-steps", "1", "--eval-every", "0", "--threads", "1"]) == 0
    after, _ = load_ckpt_model(str(sft))
    moved = max((after.state_dict()[k] - v).abs().max().item() for k, v in init["model"].items())
    assert 0 < moved < 1e-4


def test_export_f16_and_untied(tmp_path, data_dir):
    cfg = ModelConfig.preset("tiny", vocab_size=FIXTURE_VOCAB, tie_word_embeddings=False)
    model = Transformer(cfg)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "args": {"data": str(data_dir)}}, ckpt)
    out = tmp_path / "export16"
    export(str(ckpt), str(out), "f16")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == expected_names(2, tied=False)
        assert f.get_slice("lm_head.weight").get_dtype() == "F16"
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        torch.testing.assert_close(load_hf(str(out))(ids), model(ids), atol=2e-3, rtol=0)


def test_bad_export_names_the_tensor(run_dir, tmp_path):
    out = tmp_path / "export"
    export(str(run_dir), str(out), "f32")
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(out / "model.safetensors"))
    tensors["model.norm.weight"] = torch.ones(3)
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match=r"`model.norm.weight` has shape \[3\], expected \[64\]"):
        load_hf(str(out))


def test_dump_logits_cli(run_dir, tmp_path):
    out = tmp_path / "export"
    export(str(run_dir), str(out), "f32")
    dump = tmp_path / "logits.json"
    cmd = [sys.executable, os.path.join(TRAIN_DIR, "export.py"), "--model-dir", str(out),
           "--dump-logits", "1,3,20,2", "--greedy", "3", "--out", str(dump), "--threads", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    got = json.loads(dump.read_text())
    assert got["ids"] == [1, 3, 20, 2] and len(got["greedy"]) == 3
    assert len(got["logits"]) == 4 and len(got["logits"][0]) == FIXTURE_VOCAB
    ref = dump_logits(load_hf(str(out)), [1, 3, 20, 2], greedy=3)
    assert got == ref
    assert got["argmax"] == [max(range(FIXTURE_VOCAB), key=row.__getitem__) for row in got["logits"]]


def test_large_exports_are_sharded_and_load_back_exactly(run_dir, tmp_path):
    """Above --max-shard-mb the weights become HF shards + index; load_hf and --init read them."""
    out = tmp_path / "export"
    export(str(run_dir), str(out), "f32", max_shard_mb=0.1)
    files = sorted(os.listdir(out))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == expected_names(2) and set(index["weight_map"].values()) == set(shards)
    sizes = [os.path.getsize(out / s) for s in shards]
    assert index["metadata"]["total_size"] <= sum(sizes)
    # each shard holds at most one tensor beyond the limit (a tensor is never split)
    for s in shards:
        with safe_open(str(out / s), "pt") as f:
            keys = list(f.keys())
            assert keys and all(index["weight_map"][k] == s for k in keys)
    ids = [1, 3, 20, 30, 40, 50, 2, 1, 4]
    original, _ = load_ckpt_model(str(run_dir))
    with torch.no_grad():
        assert torch.equal(original(torch.tensor([ids])), load_hf(str(out))(torch.tensor([ids])))
    init = train.load_init(str(out))
    assert all(torch.equal(init["model"][k], v) for k, v in original.state_dict().items())
    # A tensor the index puts in the wrong shard is named.
    first = sorted(index["weight_map"])[0]
    other = next(s for s in shards if s != index["weight_map"][first])
    index["weight_map"][first] = other
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"`{first}` is mapped to `{other}`"):
        load_hf(str(out))
    # Exporting again as one file removes the stale shards.
    export(str(run_dir), str(out), "f32", max_shard_mb=0)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
