"""scripts/blind_read.py: the blind reading set hides the model, and the score joins labels back."""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "blind_read.py")


def run(*args, ok=True):
    p = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p


def fixture(tmp_path):
    prompts = tmp_path / "dev.jsonl"
    runs = tmp_path / "per_prompt.jsonl"
    with open(prompts, "w") as fp, open(runs, "w") as fr:
        for i in range(6):
            fp.write(json.dumps({"id": f"p{i}", "prompt": f"What is thing {i}?"}) + "\n")
            fr.write(json.dumps({"id": f"p{i}", "model": "runs/a-hf", "words": 8, "opener": f"Thing {i} is a kind of"}) + "\n")
            fr.write(json.dumps({"id": f"p{i}", "model": "b", "words": 8, "opener": f"I'm not sure ({i})"}) + "\n")
            fr.write(json.dumps({"id": f"p{i}", "model": "b", "words": 4, "opener": "ignored: other length"}) + "\n")
    return prompts, runs


def label_all(out, rule, reader):
    """Writes reader's labels for every batch: rule(model, prompt id) -> label (the test knows the key)."""
    key = json.load(open(out / "key.json"))["items"]
    for b in {v["batch"] for v in key.values()}:
        with open(out / f"batch-{b}.{reader}.labels.tsv", "w") as f:
            f.write(f"# reader {reader}\n")
            for item, v in key.items():
                if v["batch"] == b:
                    f.write(f"{item}\t{rule(v['model'], v['id'])}\tbecause\n")


def test_items_hide_the_model_and_scores_join_back(tmp_path):
    prompts, runs = fixture(tmp_path)
    out = tmp_path / "read"
    run("make", str(runs), "--model", "runs/a-hf=a", "--model", "b", "--out", str(out), "--batches", "2", "--prompts", str(prompts))
    key = json.load(open(out / "key.json"))
    assert key["models"] == ["a", "b"] and len(key["items"]) == 12
    lines = [l for b in (0, 1) for l in open(out / f"batch-{b}.tsv") if not l.startswith("#")]
    assert len(lines) == 12
    assert all("a-hf" not in l and "\tb\t" not in l for l in lines)  # no model name in what a reader sees
    order = [key["items"][l.split("\t")[0]]["model"] for l in lines]
    assert order != ["a", "b"] * 6  # shuffled, not in file order

    # Reader x: a strictly on topic everywhere, b on prompts 0-2 only; reader y agrees on a, says L for b.
    label_all(out, lambda m, pid: "S" if m == "a" or pid in ("p0", "p1", "p2") else "O", "x")
    label_all(out, lambda m, pid: "S" if m == "a" else "L", "y")
    res = json.loads(run("score", str(out)).stdout.strip().splitlines()[-1])
    assert res["models"]["a"]["strict"] == 1.0 and res["models"]["a"]["agree"] == 1.0
    assert res["models"]["b"]["strict"] == 0.25  # 3 of 12 readings
    assert res["models"]["b"]["loose"] == 0.75  # x: 3 S; y: 6 L -> 9 of 12
    assert res["pairs"]["a vs b"]["diff"] == 0.75 and res["pairs"]["a vs b"]["a_only"] == 6


def test_score_refuses_a_missing_label(tmp_path):
    prompts, runs = fixture(tmp_path)
    out = tmp_path / "read"
    run("make", str(runs), "--model", "runs/a-hf", "--model", "b", "--out", str(out), "--batches", "1", "--prompts", str(prompts))
    label_all(out, lambda m, pid: "S", "x")
    label_all(out, lambda m, pid: "S", "y")
    path = out / "batch-0.y.labels.tsv"
    path.write_text("".join(open(path).readlines()[:-1]))  # drop the last item
    assert "unlabelled" in run("score", str(out), ok=False).stderr
    path.write_text(path.read_text() + "1\tmaybe\n")
    assert "want '<item>" in run("score", str(out), ok=False).stderr
