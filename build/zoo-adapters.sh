#!/usr/bin/env bash
# Trains the LoRA and L-LoRA adapters of the default zoo's 8 tasks into $ZOO/lora and $ZOO/l-lora (ZOO default zoos/default).
# Same budget for both modes: $EPOCHS epochs (default 10), batch 64, AdamW (weight decay 0.05, cosine), rank $RANK
# (default 32), alpha 2 × rank, targets $TARGETS (default q_proj,v_proj), lora seed 0, behind the zoo's frozen heads; each mode at its own
# learning rate, chosen on validation (LoRA 3e-3, L-LoRA 1e-2; $LR sets one for every mode run).
# Resumable: a task already in a mode's pool.json is skipped, whatever recipe trained it, so another LR, RANK, EPOCHS or
# TARGETS needs a ZOO whose lora/ and l-lora/ do not exist yet (a copy of the zoo with experts, heads and the base).
# Usage: [ZOO=zoos/default] [LR=..] [RANK=32] [EPOCHS=10] [TARGETS=q_proj,v_proj] [MODES="lora l-lora"] build/zoo-adapters.sh [mlmerge command]   (two MODES runs in parallel use two cores)
set -euo pipefail
cd "$(dirname "$0")/.."
MLMERGE=${1:-"dotnet src/Microsoft.ML.ModelMerging.Cli/bin/Release/net10.0/mlmerge.dll"}
ZOO=${ZOO:-zoos/default}
TASKS="scenes fashion-photos land-use house-numbers road-signs pen-digits textures led-sums"
RANK=${RANK:-32}
EPOCHS=${EPOCHS:-10}
TARGETS=${TARGETS:-q_proj,v_proj}
for mode in ${MODES:-lora l-lora}; do
  if [ "$mode" = lora ]; then lr=${LR:-3e-3}; else lr=${LR:-1e-2}; fi
  pool=$ZOO/$mode
  [ -f "$pool/pool.json" ] || $MLMERGE pool create --base $ZOO/pretrained.safetensors --out "$pool"
  for task in $TASKS; do
    if grep -q "\"name\": \"$task\"" "$pool/pool.json"; then echo "$mode $task: done, skipped"; continue; fi
    echo "[$(date +%H:%M:%S)] $mode $task"
    $MLMERGE finetune --mode $mode --task $task --add-to "$pool" --head $ZOO/heads/$task.safetensors \
      --lr $lr --rank $RANK --alpha $((2 * RANK)) --targets $TARGETS --lora-seed 0 --seed 0 --epochs $EPOCHS
  done
done
echo "[$(date +%H:%M:%S)] all adapters trained"
