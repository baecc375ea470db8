#!/usr/bin/env python3
"""Blind reading of openers: is each one on topic and grammatical? (issue 3's quality target 1)

    python3 scripts/blind_read.py make RUN1/per_prompt.jsonl RUN2/per_prompt.jsonl \
        --model ulm-8m --model runs/ulm-30m-hf=ulm-30m --model smollm2 --out docs/eval/reading-s22 --batches 2
    # every batch-K.tsv is labelled by two readers who see neither the model nor the other reader:
    #   batch-K.<reader>.labels.tsv, one line per item: "<item>\t<S|L|O|U>"
    python3 scripts/blind_read.py score docs/eval/reading-s22

`make` pools the openers of the named models on the same prompts (an `ulm eval` run's
per_prompt.jsonl, 8-word rows), shuffles them with a fixed seed and writes them as numbered items
(prompt and opener only) in `--batches` files, and the key (item -> model, prompt id) in key.json.
A reader labels each item by RUBRIC. `score` joins the labels to the key and prints, per model and
reader, the share strictly on topic (S) and at least loosely on topic (S or L), with a 95 % Wilson
interval, the readers' agreement (Cohen's kappa), and each pair of models compared on the same
prompts; it ends with one JSON line.
"""
import argparse
import glob
import json
import math
import os
import random
import sys
from collections import defaultdict

RUBRIC = """\
Each item is a question (or message) a user sent, and the first eight words a model wrote in reply.
The opener is cut after eight words: do not mark it down for stopping mid-sentence. Label it:

S  strictly on topic: grammatical, and it starts an answer to what was asked (the task, the
   question, the person's message) -- a good reply could go on from it.
L  loosely on topic: grammatical and about the subject or the kind of task, but it does not start
   answering what was asked (it names the topic and says something beside it or wrong about it, or
   it is a generic opener that still fits this message).
O  off topic: grammatical but about something else, or a stock phrase that ignores the message.
U  ungrammatical: made-up words, broken phrases, a loop -- whatever its topic.
"""

LABELS = ("S", "L", "O", "U")


def load_rows(files, models, words):
    rows = {}
    for f in files:
        for line in open(f):
            r = json.loads(line)
            if r.get("words") == words and r["model"] in models and r.get("opener") is not None:
                rows[(r["model"], r["id"])] = r["opener"]
    return rows


def cell(s):
    return " ".join(s.replace("\t", " ").split())


def write_batches(out, items, batches, describe):
    """Writes `items` (already shuffled) as numbered lines of `batches` files batch-K.tsv in
    `out`; `describe(item)` gives its key entry, prompt and opener. Returns the key: item
    number -> the entry, with its batch."""
    os.makedirs(out, exist_ok=True)
    key, per = {}, math.ceil(len(items) / batches)
    for b in range(batches):
        with open(os.path.join(out, f"batch-{b}.tsv"), "w") as f:
            f.write("# item\tprompt\topener\n")
            for i in range(b * per, min(len(items), (b + 1) * per)):
                entry, prompt, opener = describe(items[i])
                key[str(i + 1)] = {**entry, "batch": b}
                f.write(f"{i + 1}\t{cell(prompt)}\t{cell(opener)}\n")
    return key


def make(a):
    prompts = {}
    for line in open(a.prompts):
        r = json.loads(line)
        prompts[r["id"]] = r.get("prompt", r.get("text"))  # `text`: as ulm distill --print-prompts writes it
    # `--model NAME=ALIAS`: the run's model name, and the name the key and the tables use
    alias = dict((m.split("=", 1) + [m])[:2] for m in a.model)
    a.model = list(alias.values())
    rows = {(alias[m], pid): o for (m, pid), o in load_rows(a.runs, set(alias), a.words).items()}
    # only the prompts of --prompts are read (a run may hold more)
    ids = sorted({pid for (_, pid) in rows if pid in prompts})
    missing = [(m, pid) for m in a.model for pid in ids if (m, pid) not in rows]
    if missing:
        sys.exit(f"{len(missing)} (model, prompt) rows are missing, e.g. {missing[:3]}: give every model's run")
    items = [(m, pid) for pid in ids for m in a.model]
    random.Random(a.seed).shuffle(items)
    key = write_batches(a.out, items, a.batches,
                        lambda it: ({"model": it[0], "id": it[1]}, prompts[it[1]], rows[it]))
    with open(os.path.join(a.out, "key.json"), "w") as f:
        json.dump({"seed": a.seed, "words": a.words, "models": a.model, "items": key}, f, indent=0)
    with open(os.path.join(a.out, "RUBRIC.txt"), "w") as f:
        f.write(RUBRIC)
    print(f"{len(items)} items ({len(ids)} prompts x {len(a.model)} models) in {a.batches} batches -> {a.out}")


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def kappa(pairs):
    n = len(pairs)
    if n == 0:
        return float("nan")
    po = sum(x == y for x, y in pairs) / n
    ca, cb = defaultdict(int), defaultdict(int)
    for x, y in pairs:
        ca[x] += 1
        cb[y] += 1
    pe = sum(ca[c] * cb[c] for c in LABELS) / (n * n)
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def score(a):
    key = json.load(open(os.path.join(a.dir, "key.json")))
    items = key["items"]
    labels = defaultdict(dict)  # reader slot -> item -> label; each batch has readers 0 and 1
    readers_of = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(a.dir, "batch-*.*.labels.tsv"))):
        base = os.path.basename(path)
        batch, reader = int(base.split(".")[0].split("-")[1]), base.split(".")[1]
        readers_of[batch].append(reader)
        slot = len(readers_of[batch]) - 1
        for n, line in enumerate(open(path), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1].strip().upper() not in LABELS:
                sys.exit(f"{path}:{n}: want '<item>\\t<S|L|O|U>', got {line!r}")
            item = parts[0].strip()
            if item not in items or items[item]["batch"] != batch:
                sys.exit(f"{path}:{n}: item {item} is not in batch {batch}")
            labels[slot][item] = parts[1].strip().upper()
    for b in sorted({v["batch"] for v in items.values()}):
        want = {i for i, v in items.items() if v["batch"] == b}
        if len(readers_of[b]) != 2:
            sys.exit(f"batch {b} has {len(readers_of[b])} label files, want 2 (two readers)")
        for slot in (0, 1):
            got = {i for i in want if i in labels[slot]}
            if got != want:
                sys.exit(f"batch {b}, reader {readers_of[b][slot]}: {len(want - got)} items unlabelled, e.g. {sorted(want - got)[:5]}")
    models = key["models"]
    # per model, per prompt: the two readers' labels
    by = defaultdict(dict)
    for i, v in items.items():
        by[v["model"]][v["id"]] = (labels[0][i], labels[1][i])
    out = {"models": {}, "kappa": {}, "pairs": {}}
    print(f"| model | prompts | strictly on topic (S) | at least loosely (S+L) | ungrammatical (U) | readers agree |")
    print("|---|---|---|---|---|---|")
    for m in models:
        ls = list(by[m].values())
        n = len(ls)
        s = sum((x == "S") + (y == "S") for x, y in ls) / 2
        sl = sum((x in "SL") + (y in "SL") for x, y in ls) / 2
        u = sum((x == "U") + (y == "U") for x, y in ls) / 2
        agree = sum(x == y for x, y in ls) / n
        lo, hi = wilson(s, n)
        lo2, hi2 = wilson(sl, n)
        print(f"| {m} | {n} | {s / n:.1%} ({lo:.0%}–{hi:.0%}) | {sl / n:.1%} ({lo2:.0%}–{hi2:.0%}) | {u / n:.1%} | {agree:.0%} |")
        out["models"][m] = {"prompts": n, "strict": round(s / n, 4), "strict_ci95": [round(lo, 4), round(hi, 4)], "loose": round(sl / n, 4), "loose_ci95": [round(lo2, 4), round(hi2, 4)], "ungrammatical": round(u / n, 4), "agree": round(agree, 4)}
    for b, rs in sorted(readers_of.items()):
        pairs = [(labels[0][i], labels[1][i]) for i, v in items.items() if v["batch"] == b]
        strict = [(x == "S", y == "S") for x, y in pairs]
        k4, k2 = kappa(pairs), kappa([("S" if x else "O", "S" if y else "O") for x, y in strict])
        print(f"batch {b} ({' and '.join(rs)}): {len(pairs)} items, Cohen's kappa {k4:.2f} on four labels, {k2:.2f} on strict or not")
        out["kappa"][str(b)] = {"readers": rs, "four_labels": round(k4, 3), "strict": round(k2, 3)}
    print()
    print("| A vs B, same prompts | strict: A only | B only | difference (±1 SE) |")
    print("|---|---|---|---|")
    for ia, ma in enumerate(models):
        for mb in models[ia + 1:]:
            common = sorted(set(by[ma]) & set(by[mb]))
            d = [((by[ma][p][0] == "S") + (by[ma][p][1] == "S") - (by[mb][p][0] == "S") - (by[mb][p][1] == "S")) / 2 for p in common]
            n = len(d)
            mean = sum(d) / n
            se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else float("nan")
            a_only = sum(x > 0 for x in d)
            b_only = sum(x < 0 for x in d)
            print(f"| {ma} vs {mb} | {a_only} | {b_only} | {mean:+.1%} ± {se:.1%} |")
            out["pairs"][f"{ma} vs {mb}"] = {"a_only": a_only, "b_only": b_only, "diff": round(mean, 4), "se": round(se, 4)}
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("runs", nargs="+")
    m.add_argument("--model", action="append", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--batches", type=int, default=2)
    m.add_argument("--words", type=int, default=8)
    m.add_argument("--seed", type=int, default=22)
    m.add_argument("--prompts", default="data/eval/dev.jsonl")
    s = sub.add_parser("score")
    s.add_argument("dir")
    a = p.parse_args()
    make(a) if a.cmd == "make" else score(a)


if __name__ == "__main__":
    main()
