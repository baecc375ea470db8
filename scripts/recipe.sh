#!/usr/bin/env bash
# Retrain a shipped μLM through the stages its weights went through, resumable: re-run the same
# command after a kill and every stage continues from its last checkpoint (finished stages are
# skipped, each starts from the previous stage's checkpoint).
#   scripts/recipe.sh ulm-8m  [RUNS_DIR]    # default runs/recipe-ulm-8m;  ≈ 78M tokens, ≈ 6.6 h at 3,300 tok/s
#   scripts/recipe.sh ulm-30m [RUNS_DIR]    # default runs/recipe-ulm-30m; ≈ 28M tokens, ≈ 5.2 h at 1,500 tok/s
#   scripts/recipe.sh ulm-15m [RUNS_DIR]    # ulm-8m's first nine stages, then grow to 16 layers: ≈ 47M tokens, ≈ 4.9 h
# Stages (4,096 tokens per step; steps and learning rates are those of docs/models/<model>.md):
#   1 lm       language modelling on everything, from scratch
#   2 chats    chat SFT (loss on replies, first 16 reply tokens 2x)
#   3 openers  SFT on single exchanges with the reply cut after 24 words
#   4 lm2      language modelling again
#   5 topic    openers SFT, exchanges whose reply names the question's topic written 3 times
#   6 nogen    as 5, without the distilled replies that open with the teacher's stock phrases (the
#              corpus now also holds those prompts asked again, corpus/distill part-005, which the
#              ulm-8m weights of session 8 did not see; ulm-30m's did)
#   7 lm3      (ulm-8m only) language modelling a third time, on today's corpus (parts 000-006)
#   8 super    (ulm-8m only) as 6, also without a first reply that is off topic when the same
#              prompt asked again got one on topic (--drop-superseded, part-006)
#   9 onpolicy (ulm-30m: its 7th stage, straight after 6) as 8, plus the μLM's own openers that the teacher scored best of 8
#              (corpus/student: `ulm distill --student`, written by the weights of stage 8 as
#              shipped in session 11, not by this run's; ulm-30m learns ulm-8m's openers
#              from the same data), each written 6 times, those below
#              -2 nats per token under the teacher left out, and (since session 13) those
#              that loop (a pair of words said twice, a word that runs on): 6.33M tokens
#  10 task     (ulm-8m only; session 23) as 9, plus the teacher's replies to the longer, many-part
#              requests (`instruct:task:…`, corpus/distill part-007), each written 4 times: 7.33M
#              tokens. Rebuilt today the mix also holds part-008 (composed requests), which the
#              shipped weights did not see
#  11 family   (ulm-8m only; session 30) two runs from stage 10 with two data orders (--seed 1337
#              and 1338) on every corpus/distill part, composed requests and trivia left out, the
#              chitchat family written twice over (--family-repeat chitchat=2): 11.76M tokens;
#              the shipped weights of session 30 were the mean of the two (train/soup.py)
#  12 lm4      (ulm-8m only; session 31) language modelling a fourth time, from the stage-11 mean,
#              on today's corpus (parts 000-015, 10.86M tokens), then the family data again from it:
#              two runs of 900 steps (seeds 1337 and 1338), and the mean of the two
#  13 lm6      (ulm-8m only; session 34) language modelling a fifth time, from the stage-12 mean, on
#              today's corpus (parts 000-019, 12.08M tokens: the teacher's replies of parts 016-019
#              read as language before they are SFT targets), then the family data (now with parts
#              016-019, 15.14M tokens) from it: two runs of 900 steps (seeds 1337 and 1338), and the mean
#   (ulm-30m only, after its onpolicy stage; session 16) lm3 language modelling on today's corpus
#              (9.09M tokens), then onpolicy2, the onpolicy data again
#   (ulm-15m; session 19) ulm-8m's nine stages, then grow: its 8 layers become 16 (train.py
#              --grow-layers: each layer followed by a copy whose output projections start at zero,
#              so the grown model starts at ulm-8m's loss), language modelling on today's corpus,
#              then onpolicy2, the on-policy mix again (without the teacher's sentence drift)
# The export gets the shipped model's generation_config.json (its default copy boost and candidates).
# Environment: THREADS (default 2), SCALE (multiplies every stage's steps, default 1; 0.005 for a
# smoke run), ULM (default target/release/ulm). The data are today's `ulm data` output, so the
# retrained weights match the shipped ones in recipe, not bit for bit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${1:?usage: scripts/recipe.sh ulm-8m|ulm-15m|ulm-30m [RUNS_DIR]}"
runs="${2:-runs/recipe-$model}"
threads="${THREADS:-2}"
scale="${SCALE:-1}"
ulm="${ULM:-target/release/ulm}"
# Plan: one stage per line — run name, data set, steps, learning rate, warm-up steps, and (optional,
# "-" for none) the number of layers to grow the previous stage's model to, the data-order seed
# (default 1337) and the run to start from (default: the previous line's). A line `NAME soup A,B`
# averages the exports of runs A and B (train/soup.py) instead of training.
plan_8m="lm lm 644 1e-3 60
chats chats 641 5e-4 50
openers openers 1600 5e-4 30
lm2 lm 2000 6e-4 50
topic topic 1200 3e-4 20
nogen nogen 600 2e-4 20
lm3 lm 1600 5e-4 50
super super 800 3e-4 20
onpolicy onpolicy 700 2e-4 20"
case "$model" in
  ulm-8m)  preset=micro_8m;  plan="$plan_8m
task task 600 1.5e-4 20
family family 600 1.5e-4 20 - 1337 task
familyr family 600 1.5e-4 20 - 1338 task
soup soup family,familyr
lm4 lm 1800 4e-4 50
lm4sft family 900 2.5e-4 20 - 1337
lm4sftr family 900 2.5e-4 20 - 1338 lm4
soup2 soup lm4sft,lm4sftr
lm6 lm 1800 4e-4 50
lm6sft family 900 2.5e-4 20 - 1337
lm6sftr family 900 2.5e-4 20 - 1338 lm6
soup3 soup lm6sft,lm6sftr" ;;
  ulm-15m) preset=micro_8m;  plan="$plan_8m
grow lm 1100 5e-4 50 16
onpolicy2 onpolicy 600 2.5e-4 20" ;;
  ulm-30m) preset=micro_30m; plan="lm lm 600 1e-3 60
chats chats 240 5e-4 30
openers openers 700 4e-4 30
lm2 lm 1300 6e-4 50
topic topic 600 3e-4 30
nogen nogen 400 2e-4 20
onpolicy onpolicy 800 2.5e-4 20
lm3 lm 1600 5e-4 50
onpolicy2 onpolicy 600 2.5e-4 20" ;;
  *) echo "unknown model '$model': ulm-8m, ulm-15m or ulm-30m" >&2; exit 2 ;;
esac
# The `ulm data` arguments of each data set.
declare -A data_args=(
  [lm]="--stage lm"
  [chats]="--stage sft"
  [openers]="--stage sft --mix openers"
  [topic]="--stage sft --mix openers --topic-repeat 3"
  [nogen]="--stage sft --mix openers --topic-repeat 3 --drop-generic"
  [super]="--stage sft --mix openers --topic-repeat 3 --drop-generic --drop-superseded"
  [onpolicy]="--stage sft --mix openers --topic-repeat 3 --drop-generic --drop-superseded --student-repeat 6 --min-student-ll -2 --distill-corpus corpus/distill --distill-corpus corpus/student"
  [task]="--stage sft --mix openers --topic-repeat 3 --drop-generic --drop-superseded --student-repeat 6 --min-student-ll -2 --distill-corpus corpus/distill --distill-corpus corpus/student --task-repeat 4"
  [family]="--stage sft --mix openers --topic-repeat 3 --drop-generic --drop-superseded --student-repeat 6 --min-student-ll -2 --distill-corpus corpus/distill --distill-corpus corpus/student --task-repeat 4 --leave-out instruct:task:composed --leave-out instruct:trivia --family-repeat chitchat=2"
)
[ -x "$ulm" ] || { echo "$ulm is missing: cargo build --release -p ulm" >&2; exit 1; }
mkdir -p "$runs"
prev=""
export_of() {  # the f16 export of a finished run (once)
  [ -f "$runs/$1-export/config.json" ] || train/.venv/bin/python train/export.py --ckpt "$runs/$1" --out "$runs/$1-export" --dtype f16
}
while read -r name data steps lr warmup grow seed start; do
  if [ "$data" = soup ]; then
    IFS=, read -r -a parts <<< "$steps"
    dirs=()
    for p in "${parts[@]}"; do export_of "$p"; dirs+=("$runs/$p-export"); done
    echo "== stage $name: the mean of ${parts[*]}"
    [ -f "$runs/$name-export/model.safetensors" ] || train/.venv/bin/python train/soup.py "${dirs[@]}" --out "$runs/$name-export"
    prev="$name"
    continue
  fi
  [ "${grow:--}" = - ] && grow=""
  [ "${start:--}" != - ] && prev="$start"
  # shellcheck disable=SC2086 # the arguments are meant to split
  [ -f "$runs/data-$data/manifest.json" ] || "$ulm" data ${data_args[$data]} --out "$runs/data-$data"
  steps=$(python3 -c "print(max(2, round($steps * $scale)))")
  (( warmup > steps / 2 )) && warmup=$(( steps / 2 ))  # steps >= 2, so at least 1
  stage=sft
  [ "$data" = lm ] && stage=lm
  from=(--preset "$preset")
  if [ -n "$prev" ]; then  # a run, or the export of a soup
    from=(--init "$runs/$prev"); [ -d "$runs/$prev" ] || from=(--init "$runs/$prev-export")
  fi
  [ -n "$grow" ] && from+=(--grow-layers "$grow")
  # A finished stage is skipped: train.py resumes its checkpoint and has nothing left to do.
  echo "== stage $name: $stage on $runs/data-$data, $steps steps, lr $lr${grow:+, grown to $grow layers}"
  scripts/train.sh --data "$runs/data-$data" --out "$runs/$name" --stage "$stage" "${from[@]}" \
    --lr "$lr" --warmup-steps "$warmup" --max-steps "$steps" --threads "$threads" \
    --eval-every "$(( steps < 200 ? steps : steps / 4 ))" --seed "${seed:-1337}"
  prev="$name"
done <<< "$plan"
if [ -d "$runs/$prev" ]; then
  train/.venv/bin/python train/export.py --ckpt "$runs/$prev" --out "$runs/export" --dtype f16
else
  rm -rf "$runs/export" && cp -r "$runs/$prev-export" "$runs/export"  # the last stage was a soup
fi
# The shipped model's sampling defaults (its copy boost) belong to the recipe too.
# (ulm-15m before it is shipped: ulm-8m's, which it was grown from.)
gen="models/$model/generation_config.json"
[ -f "$gen" ] || gen=models/ulm-8m/generation_config.json
[ -f "$gen" ] && cp "$gen" "$runs/export/"
echo "recipe done: $runs/export (compare: ulm eval --models $runs/export,$model --scorer smollm2)"
