#!/usr/bin/env bash
# The 1 GB `multitoken prepare` measurement of docs/data.md: a synthetic 1 GB corpus (deterministic), a BPE tokenizer
# (vocab 8192) trained on a ~100 MB sample of it, then `prepare` with the byte-level and the BPE tokenizer, each
# measured (wall time, peak memory of the whole process tree) and verified (shards decoded back to the input, byte
# for byte). Needs ~5 GB free under $WORK. Environment: WORK (default /tmp/mt1g), SIZE_MB (1000), WORKERS (2),
# TOKENIZERS ("bytes bpe").
set -euo pipefail
WORK=${WORK:-/tmp/mt1g}
SIZE_MB=${SIZE_MB:-1000}
WORKERS=${WORKERS:-2}
TOKENIZERS=${TOKENIZERS:-bytes bpe}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v multitoken > /dev/null || { echo "multitoken is not on PATH: activate its environment first" >&2; exit 1; }
mkdir -p "$WORK"

if [ ! -f "$WORK/corpus.done" ]; then
  python "$HERE/synth_corpus.py" --out "$WORK/corpus" --size-mb "$SIZE_MB" --seed 0
  touch "$WORK/corpus.done"
fi
find "$WORK/corpus" -type f -printf '%s\n' | awk '{s += $1} END {print "corpus:", s, "bytes in", NR, "files"}'

if [ ! -f "$WORK/tok/tokenizer.json" ]; then  # a sample of the corpus: three of its 34 folders, ~95 MB
  /usr/bin/time -f "tokenizer train: %e s, max RSS %M kB" \
    multitoken tokenizer train --data "$WORK/corpus/text/03" "$WORK/corpus/src/04" "$WORK/corpus/src/05" \
    --vocab-size 8192 --out "$WORK/tok"
fi

for tok in $TOKENIZERS; do
  spec=$([ "$tok" = bytes ] && echo bytes || echo "$WORK/tok")
  out="$WORK/prep-$tok-w$WORKERS"
  rm -rf "$out"
  python "$HERE/prepare_check.py" measure --json "$WORK/measure-$tok-w$WORKERS.json" -- \
    /usr/bin/time -f "prepare ($tok): %e s, max RSS of the main process %M kB" \
    multitoken prepare --data "$WORK/corpus" --tokenizer "$spec" --out "$out" --workers "$WORKERS"
  # a second run over the finished folder is a no-op
  multitoken prepare --data "$WORK/corpus" --tokenizer "$spec" --out "$out" --workers "$WORKERS"
  python "$HERE/prepare_check.py" verify "$out" --json "$WORK/verify-$tok-w$WORKERS.json"
done
