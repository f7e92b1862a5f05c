#!/usr/bin/env bash
# Ristretto's flow, run by hand with the CLI, for one trained model (docs/RESULTS.md):
#   1. fp32 baseline;
#   2. with the rest of the net in fp32, uniform fixed:16/8/4/2 for all conv weights, for all fc
#      weights, and for all layer activations (inputs and outputs);
#   3. combine the smallest width of each group within the error margin, re-check;
#   4. fine-tune the combination and evaluate it again.
#
#   bash bench/ristretto_flow.sh MODEL.onnx [MARGIN_PP=1.0] [FINETUNE_STEPS=1000]
# Prints a Markdown table. Needs jq-free bash + awk only.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$1"
MARGIN="${2:-1.0}"
STEPS="${3:-1000}"
B="${BITSWEEP_BUILD_DIR:-build}/client/bitsweep"
DATA="idx:/usr/share/datasets/fashion-mnist"
NORM=(--mean 0.2860 --std 0.3530)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

field() {  # field NAME JSON -> value of a numeric top-level field (keys are sorted, so the
           # top-level one comes before the per-layer ones inside "layers")
  grep -o "\"$1\":[-0-9.e+]*" <<<"$2" | head -1 | cut -d: -f2
}
eval_config() {  # eval_config CONFIG_JSON -> "top1 size_bits energy_pj"
  echo "$1" > "$WORK/c.json"
  local out
  out=$("$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}" --config "$WORK/c.json" --json)
  echo "$(field top1 "$out") $(field size_bits "$out") $(field energy_pj "$out")"
}
pp() { awk -v a="$1" 'BEGIN { printf "%.2f", 100 * a }'; }

base=$("$B" eval --model "$MODEL" --dataset "$DATA" "${NORM[@]}" --json)
base_top1=$(field top1 "$base")
read -r _ base_size base_energy <<<"$(eval_config '{}')"
echo "| step | config | top-1 (%) | drop (pp) | weight bits | energy (pJ/inference) |"
echo "|---|---|---|---|---|---|"
echo "| fp32 baseline | - | $(pp "$base_top1") | 0.00 | $base_size | $(printf %.0f "$base_energy") |"

smallest() {  # smallest GROUP -> smallest passing width, printing the rows
  local group="$1" best=32
  for bits in 16 8 4 2; do
    case "$group" in
      conv) cfg="{\"conv\": {\"weights\": \"fixed:$bits\"}}" ;;
      fc) cfg="{\"fc\": {\"weights\": \"fixed:$bits\"}}" ;;
      act) cfg="{\"default\": {\"inputs\": \"fixed:$bits\", \"outputs\": \"fixed:$bits\"}}" ;;
    esac
    read -r top1 size energy <<<"$(eval_config "$cfg")"
    drop=$(awk -v b="$base_top1" -v t="$top1" 'BEGIN { printf "%.2f", 100 * (b - t) }')
    echo "| $group sweep | \`$cfg\` | $(pp "$top1") | $drop | $size | $(printf %.0f "$energy") |" >&2
    if awk -v d="$drop" -v m="$MARGIN" 'BEGIN { exit !(d <= m) }'; then best=$bits; else break; fi
  done
  echo "$best"
}
# A group with no layers (SqueezeNet has no fc layers) is left out of the sweep and combination.
layers=$("$B" inspect --model "$MODEL" --json)
conv_bits=$(smallest conv 2>>"$WORK/rows")
combined="{\"conv\": {\"weights\": \"fixed:$conv_bits\"}, "
if grep -q '"class":"fc"' <<<"$layers"; then
  fc_bits=$(smallest fc 2>>"$WORK/rows")
  combined+="\"fc\": {\"weights\": \"fixed:$fc_bits\"}, "
else
  echo "| fc sweep | (no fc layers) | - | - | - | - |" >>"$WORK/rows"
fi
act_bits=$(smallest act 2>>"$WORK/rows")
cat "$WORK/rows"
combined+="\"default\": {\"inputs\": \"fixed:$act_bits\", \"outputs\": \"fixed:$act_bits\"}}"
read -r top1 size energy <<<"$(eval_config "$combined")"
drop=$(awk -v b="$base_top1" -v t="$top1" 'BEGIN { printf "%.2f", 100 * (b - t) }')
echo "| combination | \`$combined\` | $(pp "$top1") | $drop | $size | $(printf %.0f "$energy") |"
echo "$combined" > "$WORK/combined.json"
ft=$("$B" finetune --model "$MODEL" --config "$WORK/combined.json" --dataset "$DATA" "${NORM[@]}" \
     --steps "$STEPS" --json | tail -1)
ft_top1=$(field top1 "$ft")
drop=$(awk -v b="$base_top1" -v t="$ft_top1" 'BEGIN { printf "%.2f", 100 * (b - t) }')
echo "| fine-tuned ($STEPS steps) | same | $(pp "$ft_top1") | $drop | $size | $(printf %.0f "$energy") |"
