"""Export a checkpoint to the HF layout ulm-runtime loads; dump logits for the parity test.

    train/.venv/bin/python train/export.py --ckpt runs/ulm-8m-sft --out models/ulm-8m --dtype f16
    train/.venv/bin/python train/export.py --model-dir models/ulm-8m --dump-logits 1,872,25 --greedy 8 --out logits.json

An export directory holds config.json (LlamaConfig field names), model.safetensors (HF tensor
names; `lm_head.weight` only when untied), tokenizer.json and tokenizer_config.json (with a ChatML
chat_template) copied from the data directory the checkpoint was trained on (or --data).
Weights larger than --max-shard-mb (default 45, so every file stays under a 50 MB repository
limit) are split the Hugging Face way: model-00001-of-0000N.safetensors … plus
model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map": {tensor: file}}).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import ModelConfig, Transformer  # noqa: E402

DTYPES = {"f32": (torch.float32, "float32"), "f16": (torch.float16, "float16")}

# ChatML, used when the data directory brings no tokenizer_config.json of its own. A system turn
# is rendered only when the conversation has one.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ------------------------------------------------------------------------------------------------
# Names and config


def hf_state_dict(model: Transformer) -> dict:
    """Our module names are the HF ones under `model.`; the head exists only when untied."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            out[name] = tensor
        else:
            out["model." + name] = tensor
    return out


def hf_config(cfg: ModelConfig, torch_dtype: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": torch_dtype,
    }


def config_from_hf(hf: dict) -> ModelConfig:
    return ModelConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf["num_key_value_heads"],
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
        rms_norm_eps=hf["rms_norm_eps"], rope_theta=hf["rope_theta"],
        tie_word_embeddings=hf.get("tie_word_embeddings", True))


# ------------------------------------------------------------------------------------------------
# Load / save


def load_ckpt_model(path: str) -> tuple[Transformer, dict]:
    """A Transformer with the weights of a training checkpoint (file or run directory), on CPU."""
    from train import load_checkpoint

    ckpt = load_checkpoint(path)
    model = Transformer(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


SHARD_INDEX = "model.safetensors.index.json"
MAX_SHARD_MB = 45  # every weight file stays under a 50 MB repository limit


def save_weights(tensors: dict, out_dir: str, max_shard_bytes: int = 0) -> list[str]:
    """model.safetensors, or shards + index when the tensors exceed max_shard_bytes (0 = never).

    Tensors go into shards in order, a new shard starting when the next tensor would overflow
    the current one (a tensor larger than the limit gets a shard of its own). Stale weight files
    of an earlier export are removed. -> the file names written.
    """
    for name in os.listdir(out_dir):
        if name.endswith(".safetensors") or name == SHARD_INDEX:
            os.remove(os.path.join(out_dir, name))
    sizes = {k: v.numel() * v.element_size() for k, v in tensors.items()}
    total = sum(sizes.values())
    if max_shard_bytes <= 0 or total <= max_shard_bytes:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    shards, size = [[]], 0
    for k in tensors:
        if shards[-1] and size + sizes[k] > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(k)
        size += sizes[k]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, keys in zip(names, shards):
        save_file({k: tensors[k] for k in keys}, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    with open(os.path.join(out_dir, SHARD_INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names + [SHARD_INDEX]


def has_weights(model_dir: str) -> bool:
    return any(os.path.exists(os.path.join(model_dir, n)) for n in ("model.safetensors", SHARD_INDEX))


def load_weights(model_dir: str) -> tuple[dict, str]:
    """The tensors of model.safetensors or of every shard the index names. -> (tensors, path)."""
    path = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(path) or not os.path.exists(os.path.join(model_dir, SHARD_INDEX)):
        return load_file(path), path
    path = os.path.join(model_dir, SHARD_INDEX)
    with open(path) as f:
        weight_map = json.load(f)["weight_map"]
    tensors = {}
    for name in sorted(set(weight_map.values())):
        if os.path.basename(name) != name:
            raise ValueError(f"{path}: shard `{name}` is not a file name beside the index")
        shard = load_file(os.path.join(model_dir, name))
        for k, file in weight_map.items():
            if file == name:
                if k not in shard:
                    raise ValueError(f"{path}: tensor `{k}` is mapped to `{name}`, which does not hold it")
                tensors[k] = shard[k]
    return tensors, path


def load_hf(model_dir: str) -> Transformer:
    """Load an export directory back (f16 weights are widened to f32), checking names and shapes."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = config_from_hf(json.load(f))
    model = Transformer(cfg)
    tensors, path = load_weights(model_dir)
    expected = hf_state_dict(model)
    missing, extra = expected.keys() - tensors.keys(), tensors.keys() - expected.keys()
    if missing or extra:
        raise ValueError(f"{path}: missing tensors {sorted(missing)}, unexpected tensors {sorted(extra)}")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise ValueError(f"{path}: tensor `{name}` has shape {list(tensors[name].shape)}, expected {list(ref.shape)}")
    state = {(k[len("model."):] if k.startswith("model.") else k): v.float() for k, v in tensors.items()}
    model.load_state_dict(state)
    return model.eval()


def export(ckpt_path: str, out_dir: str, dtype: str = "f32", data_dir: str | None = None,
           chat_template: str | None = None, max_shard_mb: float = MAX_SHARD_MB) -> str:
    model, ckpt = load_ckpt_model(ckpt_path)
    torch_dtype, dtype_name = DTYPES[dtype]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.cfg, dtype_name), f, indent=2)
    tensors = {k: v.detach().to(torch_dtype).contiguous() for k, v in hf_state_dict(model).items()}
    save_weights(tensors, out_dir, int(max_shard_mb * 1e6))
    copy_tokenizer(data_dir or ckpt["args"]["data"], out_dir, model.cfg, chat_template)
    return out_dir


def copy_tokenizer(data_dir: str, out_dir: str, cfg: ModelConfig, chat_template: str | None):
    """tokenizer.json from the data directory; its tokenizer_config.json, or a ChatML one."""
    with open(os.path.join(data_dir, "manifest.json")) as f:
        tokenizer_name = json.load(f).get("tokenizer", "tokenizer.json")
    src = os.path.join(data_dir, tokenizer_name)
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: the tokenizer named by {data_dir}/manifest.json is missing")
    shutil.copyfile(src, os.path.join(out_dir, "tokenizer.json"))
    src_config = os.path.join(data_dir, "tokenizer_config.json")
    if os.path.exists(src_config):
        with open(src_config) as f:
            tok_config = json.load(f)
    else:
        tok_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "model_max_length": cfg.max_position_embeddings,
            "chat_template": CHATML_TEMPLATE,
        }
    if chat_template is not None:
        tok_config["chat_template"] = chat_template
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------
# Logits for the cross-language parity test


@torch.no_grad()
def dump_logits(model: Transformer, ids: list[int], greedy: int = 0) -> dict:
    """f32 logits of every position of `ids`, and `greedy` argmax tokens generated after them.

    -> {"ids": [...], "logits": [[vocab floats] per position], "argmax": [...], "greedy": [...]}
    Generation recomputes the whole sequence each step (no cache): slow, and obviously right.
    """
    model = model.float().eval()
    logits = model(torch.tensor([ids]))[0]  # (T, vocab)
    seq = list(ids)
    for _ in range(greedy):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return {"ids": list(ids), "logits": logits.tolist(), "argmax": logits.argmax(-1).tolist(),
            "greedy": seq[len(ids):]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="training checkpoint (ckpt.pt or its run directory)")
    src.add_argument("--model-dir", help="an export directory (only with --dump-logits)")
    p.add_argument("--out", help="export directory, or the JSON file of --dump-logits (default stdout)")
    p.add_argument("--dtype", choices=list(DTYPES), default="f32", help="weight dtype of model.safetensors")
    p.add_argument("--max-shard-mb", type=float, default=MAX_SHARD_MB,
                   help="split weights above this many MB into shards + index (0 = one file; default 45)")
    p.add_argument("--data", help="data directory holding tokenizer.json (default: the checkpoint's)")
    p.add_argument("--chat-template", help="file whose text becomes tokenizer_config.json's chat_template")
    p.add_argument("--dump-logits", metavar="PROMPT_IDS", help="comma-separated token ids: write logits as JSON")
    p.add_argument("--greedy", type=int, default=0, help="with --dump-logits: also generate N greedy tokens")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.dump_logits is not None:
        ids = [int(t) for t in args.dump_logits.replace(" ", "").split(",") if t]
        model = load_hf(args.model_dir) if args.model_dir else load_ckpt_model(args.ckpt)[0]
        text = json.dumps(dump_logits(model, ids, args.greedy))
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            print(text)
        return 0

    if args.model_dir or not args.out:
        p.error("export needs --ckpt and --out")
    template = open(args.chat_template).read() if args.chat_template else None
    out = export(args.ckpt, args.out, args.dtype, args.data, template, args.max_shard_mb)
    weights = sorted(n for n in os.listdir(out) if "safetensors" in n)
    print(f"wrote {out}: config.json, {', '.join(weights)} ({args.dtype}), tokenizer.json, tokenizer_config.json",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
