#!/usr/bin/env python3
"""Side-by-side openers of two or more models from an `ulm eval` run, as a Markdown table (model cards).

    python3 scripts/opener_table.py runs/eval-ulm8m/per_prompt.jsonl --a ulm-8m --b smollm2 --words 8 --n 20
    python3 scripts/opener_table.py runs/eval-30m/per_prompt.jsonl --a ulm-30m --b ulm-8m --b smollm2

Picks `--n` prompts spread over the sources in file order (every k-th prompt of each source, so the
choice is fixed and not cherry-picked), and prints prompt | opener A | opener B … (`--b` may be given
more than once). With `--all` every prompt is printed (for reading all openers when judging them).
"""
import argparse
import json
from collections import defaultdict


def cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ⏎ ").strip()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("per_prompt")
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True, action="append")
    p.add_argument("--words", type=int, default=8)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--all", action="store_true")
    p.add_argument("--prompts", default="data/eval/dev.jsonl")
    args = p.parse_args()
    text = {}
    for line in open(args.prompts):
        r = json.loads(line)
        text[r["id"]] = r["prompt"]
    models = [args.a] + args.b
    openers = defaultdict(dict)
    order = []
    for line in open(args.per_prompt):
        r = json.loads(line)
        if r["words"] != args.words or r["model"] not in models:
            continue
        if r["id"] not in openers:
            order.append((r["id"], r["source"]))
        openers[r["id"]][r["model"]] = r["opener"]
    ids = [i for i, _ in order if len(openers[i]) == len(models)]
    if not args.all:
        by_source = defaultdict(list)
        for i, src in order:
            if i in ids:
                by_source[src].append(i)
        total = sum(len(v) for v in by_source.values())
        picked = []
        for src, v in sorted(by_source.items()):
            k = max(1, round(args.n * len(v) / total))
            step = max(1, len(v) // k)
            picked += v[::step][:k]
        ids = picked[: args.n]
    print("| # | prompt | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for n, i in enumerate(ids, 1):
        prompt = text.get(i, i)
        if len(prompt) > 90:
            prompt = prompt[:87] + "…"
        cells = " | ".join(cell(openers[i][m]) for m in models)
        print(f"| {n} | {cell(prompt)} | {cells} |")


if __name__ == "__main__":
    main()
