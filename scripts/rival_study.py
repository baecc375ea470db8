#!/usr/bin/env python3
"""How should the best-of-N choice rank a μLM's openers? Read every candidate blind, then compare rules.

    ulm eval --models ulm-8m --pmi 0.5 --keep-candidates --scorer smollm2 --words 8 \
        --prompts docs/eval/reading-s24d/prompts.jsonl --out runs/s26/eval-mix-rivals
    python3 scripts/rival_study.py make runs/s26/eval-mix-rivals/per_prompt.jsonl \
        --prompts docs/eval/reading-s24d/prompts.jsonl --out docs/eval/rivals-s26 --batches 5 --seed 2601
    # every batch-K.tsv is labelled by two readers, as for scripts/blind_read.py
    python3 scripts/rival_study.py score docs/eval/rivals-s26 runs/s26/eval-mix-rivals/per_prompt.jsonl

`make` takes the rows of `ulm eval --keep-candidates` (each row's `rivals`: every candidate the
choice saw, with its fit and the model's log-probabilities), keeps each prompt's distinct openers,
shuffles them with a fixed seed and writes numbered items (prompt and opener only, scripts/blind_read.py's
RUBRIC) and the key (item -> prompt id, opener). `score` joins the two readers' labels to the key
(an opener's worth: the share of its two labels that are S) and prints, per rule of choice, the
share of prompts whose chosen opener is strictly on topic: the rule the runtime used, each
single-feature rule among the openers of the best fit, a chance pick among them, the best that
any rule could do (the oracle), a logistic ranker over the features scored by leave-one-fold-out
over prompts, and the scorer's (the teacher's) own choices, by its likelihood after the question less
a share of its likelihood after none. It ends with one JSON line.
"""
import argparse
import glob
import gzip
import json
import math
import os
import random
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blind_read import LABELS, RUBRIC, kappa, write_batches  # noqa: E402


def load(run):
    rows = {}
    for line in (gzip.open(run, "rt") if run.endswith(".gz") else open(run)):
        r = json.loads(line)
        if r.get("rivals"):
            rows[r["id"]] = r
    return rows


def distinct(rivals):
    seen, out = set(), []
    for k, v in enumerate(rivals):
        t = " ".join(v["text"].split())
        if t and t not in seen:
            seen.add(t)
            out.append((k, t))
    return out


def make(a):
    listed = [json.loads(l) for l in open(a.prompts)]
    prompts = {r["id"]: r.get("prompt", r.get("text")) for r in listed}  # `text`: as ulm distill --print-prompts writes it
    rows = load(a.run)
    items = [(pid, t) for pid in sorted(rows) if pid in prompts for _, t in distinct(rows[pid]["rivals"])]
    random.Random(a.seed).shuffle(items)
    key = write_batches(a.out, items, a.batches, lambda it: ({"id": it[0], "text": it[1]}, prompts[it[0]], it[1]))
    with open(os.path.join(a.out, "key.json"), "w") as f:
        json.dump({"seed": a.seed, "run": a.run, "items": key}, f, indent=0)
    with open(os.path.join(a.out, "RUBRIC.txt"), "w") as f:
        f.write(RUBRIC)
    print(f"{len(items)} distinct openers of {len({p for p, _ in items})} prompts in {a.batches} batches -> {a.out}")


def read_labels(d, items):
    labels = defaultdict(list)  # item -> labels of its readers
    readers = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(d, "batch-*.*.labels.tsv"))):
        base = os.path.basename(path)
        batch, reader = int(base.split(".")[0].split("-")[1]), base.split(".")[1]
        readers[batch].append(reader)
        for n, line in enumerate(open(path), 1):
            parts = line.strip().split("\t")
            if not parts[0] or parts[0].startswith("#"):
                continue
            if len(parts) < 2 or parts[1].strip().upper() not in LABELS or parts[0] not in items or items[parts[0]]["batch"] != batch:
                sys.exit(f"{path}:{n}: want '<item of batch {batch}>\\t<S|L|O|U>', got {line.strip()!r}")
            labels[parts[0]].append(parts[1].strip().upper())
    for b in sorted({v["batch"] for v in items.values()}):
        if len(readers[b]) != 2:
            sys.exit(f"batch {b} has {len(readers[b])} label files, want 2 (two readers)")
    short = [i for i in items if len(labels[i]) != 2]
    if short:
        sys.exit(f"{len(short)} items lack a label from both readers, e.g. {short[:5]}")
    return labels, readers


FEATURES = ("mean_logprob", "pmi", "min_logprob", "mean_entropy", "tokens", "ends_sentence", "starts_i", "question_mark")


def features(r):
    t = r["text"]
    prior = r["prior"] if r.get("prior") is not None else r["mean_logprob"]
    words = t.split()
    return [
        r["mean_logprob"],
        r["mean_logprob"] - prior,
        r["min_logprob"],
        r["mean_entropy"],
        r["tokens"] / max(1, len(words)),
        float(any(w.endswith((".", "!")) for w in words[:-1])),
        float(words[0] in ("I", "I'm", "I've", "I'd", "I'll") if words else 0),
        float("?" in t),
    ]


def logistic(xs, ys, l2=1.0, steps=400, lr=0.5):
    """Weights of a logistic model of ys (0..1) on standardised xs, by gradient descent."""
    d = len(xs[0])
    mu = [sum(x[j] for x in xs) / len(xs) for j in range(d)]
    sd = [math.sqrt(sum((x[j] - mu[j]) ** 2 for x in xs) / len(xs)) or 1.0 for j in range(d)]
    z = [[(x[j] - mu[j]) / sd[j] for j in range(d)] for x in xs]
    w, b = [0.0] * d, 0.0
    for _ in range(steps):
        gw, gb = [l2 * wj / len(z) for wj in w], 0.0
        for x, y in zip(z, ys):
            p = 1 / (1 + math.exp(-(b + sum(wj * xj for wj, xj in zip(w, x)))))
            for j in range(d):
                gw[j] += (p - y) * x[j] / len(z)
            gb += (p - y) / len(z)
        w = [wj - lr * g for wj, g in zip(w, gw)]
        b -= lr * gb
    # back to the raw features: score = b' + sum w'_j x_j
    return [wj / sj for wj, sj in zip(w, sd)], b - sum(wj * mj / sj for wj, mj, sj in zip(w, mu, sd))


def score(a):
    key = json.load(open(os.path.join(a.dir, "key.json")))
    items = key["items"]
    labels, readers = read_labels(a.dir, items)
    worth = {(v["id"], v["text"]): sum(l == "S" for l in labels[i]) / 2 for i, v in items.items()}
    rows = load(a.run)
    prompts = sorted({v["id"] for v in items.values()})
    # per prompt: candidates of the best fit (not looping, then naming the topic), with worth and features
    pool = {}
    for pid in prompts:
        rv = rows[pid]["rivals"]
        top = max((not r["loops"], r["names_topic"]) for r in rv)
        cands = []
        for k, t in distinct(rv):
            r = rv[k]
            cands.append({"worth": worth[(pid, t)], "x": features(r), "top": (not r["loops"], r["names_topic"]) == top, "chosen": any(v["chosen"] for v in rv if " ".join(v["text"].split()) == t), "ll": r.get("scorer_ll"), "prior": r.get("scorer_prior")})
        pool[pid] = cands
    n = len(prompts)
    res = {}

    def by_rule(pick):
        return sum(pick(pool[p])["worth"] for p in prompts) / n

    res["runtime choice (fit, then pmi 0.5)"] = by_rule(lambda c: next(x for x in c if x["chosen"]))
    res["chance among the best fit"] = sum(sum(x["worth"] for x in c if x["top"]) / sum(x["top"] for x in c) for c in pool.values()) / n
    res["chance among all"] = sum(sum(x["worth"] for x in c) / len(c) for c in pool.values()) / n
    for j, f in enumerate(FEATURES):
        for sign, word in ((1, "highest"), (-1, "lowest")):
            res[f"best fit, {word} {f}"] = by_rule(lambda c, j=j, s=sign: max((x for x in c if x["top"]), key=lambda x: s * x["x"][j]))
    # the teacher's view (not on the device: for choosing training openers, `ulm distill --student`)
    if all(x["ll"] is not None and x["prior"] is not None for c in pool.values() for x in c):
        for w in (0.0, 0.5, 1.0):
            res[f"teacher: best fit, highest LL − {w} · LL without the question"] = by_rule(lambda c, w=w: max((x for x in c if x["top"]), key=lambda x: x["ll"] - w * x["prior"]))
            res[f"teacher: all, highest LL − {w} · LL without the question"] = by_rule(lambda c, w=w: max(c, key=lambda x: x["ll"] - w * x["prior"]))
    res["oracle among the best fit"] = by_rule(lambda c: max((x for x in c if x["top"]), key=lambda x: x["worth"]))
    # the best any rule could do with fewer candidates: the first k in sampling order
    for k in (1, 2, 4):
        firsts = {p: {" ".join(v["text"].split()) for v in rows[p]["rivals"][:k]} for p in prompts}
        res[f"oracle among the first {k}"] = sum(max(worth.get((p, t), 0.0) for t in firsts[p]) for p in prompts) / n
    res["oracle among all"] = by_rule(lambda c: max(c, key=lambda x: x["worth"]))
    # logistic ranker among the best fit, k-fold over prompts
    folds = 5
    order = prompts[:]
    random.Random(7).shuffle(order)
    got = 0.0
    for f in range(folds):
        test = set(order[f::folds])
        train = [x for p in prompts if p not in test for x in pool[p] if x["top"]]
        w, b = logistic([x["x"] for x in train], [x["worth"] for x in train])
        for p in test:
            got += max((x for x in pool[p] if x["top"]), key=lambda x: sum(wj * xj for wj, xj in zip(w, x["x"])))["worth"]
    res[f"logistic ranker among the best fit ({folds}-fold over prompts)"] = got / n
    w, b = logistic([x["x"] for p in prompts for x in pool[p] if x["top"]], [x["worth"] for p in prompts for x in pool[p] if x["top"]])
    print(f"{n} prompts, {len(items)} distinct openers ({sum(len(c) for c in pool.values()) / n:.1f} per prompt, {sum(x['top'] for c in pool.values() for x in c) / n:.1f} of the best fit)")
    for b, rs in sorted(readers.items()):
        pairs = [tuple(labels[i]) for i, v in items.items() if v["batch"] == b]
        print(f"batch {b} ({' and '.join(rs)}): {len(pairs)} openers, Cohen's kappa {kappa(pairs):.2f} on four labels, {kappa([tuple('S' if l == 'S' else 'O' for l in p) for p in pairs]):.2f} on strict or not")
    print("| rule of choice | strictly on topic |")
    print("|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.1%} |")
    print("logistic weights (raw features): " + ", ".join(f"{f} {wj:+.3f}" for f, wj in zip(FEATURES, w)) + f", bias {b:+.3f}")
    print(json.dumps({"prompts": n, "openers": len(items), "readers": readers, "strict": {k: round(v, 4) for k, v in res.items()}, "weights": dict(zip(FEATURES, [round(x, 4) for x in w]))}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("run")
    m.add_argument("--out", required=True)
    m.add_argument("--batches", type=int, default=4)
    m.add_argument("--seed", type=int, default=26)
    m.add_argument("--prompts", required=True)
    s = sub.add_parser("score")
    s.add_argument("dir")
    s.add_argument("run")
    a = p.parse_args()
    make(a) if a.cmd == "make" else score(a)


if __name__ == "__main__":
    main()
