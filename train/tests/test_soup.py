"""Soup: the weighted mean of export directories, in the first one's dtype, refused across shapes."""

import pytest
import torch

import train
from export import export, load_weights
from soup import main, soup


def exported(data_dir, tmp_path, name, seed, steps=3, preset="tiny"):
    run = tmp_path / f"run-{name}"
    train.main(["--data", str(data_dir), "--out", str(run), "--preset", preset, "--seq-len", "32", "--batch-size", "4",
                "--max-steps", str(steps), "--eval-every", "0", "--threads", "1", "--seed", str(seed)])
    out = tmp_path / name
    export(str(run), str(out), "f32")
    return out


def test_the_soup_is_the_weighted_mean_and_loads_back(data_dir, tmp_path):
    a, b = exported(data_dir, tmp_path, "a", 1), exported(data_dir, tmp_path, "b", 2)
    ta, tb = load_weights(str(a))[0], load_weights(str(b))[0]
    assert any(not torch.equal(ta[k], tb[k]) for k in ta), "two seeds give two models"
    mixed = soup([str(a), str(b)], [3.0, 1.0])
    for k in ta:
        assert torch.allclose(mixed[k], 0.75 * ta[k] + 0.25 * tb[k], atol=1e-6), k
    out = tmp_path / "soup"
    main([str(a), str(b), "--out", str(out)])
    back = load_weights(str(out))[0]
    for k in ta:
        assert back[k].dtype == ta[k].dtype and torch.allclose(back[k], (ta[k] + tb[k]) / 2, atol=1e-6), k
    assert (out / "config.json").read_text() == (a / "config.json").read_text()
    assert (out / "tokenizer.json").exists()


def test_models_of_other_shapes_or_bad_weights_are_refused(data_dir, tmp_path):
    a = exported(data_dir, tmp_path, "a", 1)
    with pytest.raises(ValueError, match="two models"):
        soup([str(a)])
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        soup([str(a), str(a)], [1.0])
    with pytest.raises(ValueError, match="export directory"):
        soup([str(a), str(tmp_path)])
    # the same tensors under another shape: a model with another vocabulary or width
    other = tmp_path / "other"
    other.mkdir()
    t = load_weights(str(a))[0]
    from export import save_weights
    save_weights({k: v[..., :1].clone() if v.dim() == 2 else v for k, v in t.items()}, str(other))
    with pytest.raises(ValueError, match="names or shapes"):
        soup([str(a), str(other)])
