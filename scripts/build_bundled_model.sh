#!/usr/bin/env bash
# Build the bundled default model detector/assets/railcar_obb.pt + railcar_obb.json, the way
# the shipped one was built on a 2-core CPU (about 1.5 h in all):
#   1. experiment=synthetic_default: 36 synthetic yards at 0.5 m/px, yolo11n-obb from scratch,
#      training capped at STAGE1_HOURS (0.9);
#   2. a second stage fine-tuned from stage 1 on the same dataset (lower AdamW lr, no warmup),
#      capped at STAGE2_HOURS (0.45);
#   3. recalibration on 16 freshly generated scenes never used in training (whole scenes through
#      the real tiled inference), which also measures the per-scene dispersion of the counts.
#
#   scripts/build_bundled_model.sh                                   # CPU, as shipped
#   STAGE1_HOURS=2 scripts/build_bundled_model.sh trainer.device=0 trainer.batch=32 trainer.workers=8
#
# Extra arguments are Hydra overrides passed to both training stages.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=$(date +%Y-%m-%d_%H-%M-%S)
stage1="outputs/train/bundled_${stamp}_stage1"
stage2="outputs/train/bundled_${stamp}_stage2"
calib="outputs/train/bundled_${stamp}_calibration_scenes"
assets="detector/assets"
start=$(date +%s)

python -m detector.train experiment=synthetic_default trainer.time="${STAGE1_HOURS:-0.9}" \
    hydra.run.dir="$stage1" "$@"
python -m detector.train experiment=synthetic_default model.init="$stage1/railcar_obb.pt" \
    trainer.time="${STAGE2_HOURS:-0.45}" trainer.optimizer=AdamW trainer.lr0=0.001 \
    trainer.warmup_epochs=0 trainer.close_mosaic=4 hydra.run.dir="$stage2" "$@"

# Calibration scenes: the experiment's scene settings, other seeds.
python - "$calib" <<'PY'
import sys

from detector.evaluate.experiments import synth_config, training_scene_settings
from detector.synth import write_scenes

write_scenes(synth_config(sys.argv[1], 16, 5000, training_scene_settings()))
PY
python -m detector.train.recalibrate weights="$stage2/railcar_obb.pt" scenes="$calib"

mkdir -p "$assets"
# Copy under temporary names, then rename, so the package never holds half a bundle.
cp -- "$stage2/railcar_obb.pt" "$assets/.railcar_obb.pt.partial"
cp -- "$stage2/railcar_obb.json" "$assets/.railcar_obb.json.partial"
mv -- "$assets/.railcar_obb.pt.partial" "$assets/railcar_obb.pt"
mv -- "$assets/.railcar_obb.json.partial" "$assets/railcar_obb.json"

python - "$assets/railcar_obb.pt" "$(( $(date +%s) - start ))" <<'PY'
import sys

from detector.bundle import read_card

card = read_card(sys.argv[1])  # checks the sha256 of the copied weights
m = card.metrics
print(f"bundled model: {sys.argv[1]} (+ .json), built in {int(sys.argv[2]) / 60:.1f} min")
print(f"val  mAP50 {m['mAP50']}  mAP50-95 {m['mAP50-95']}  ECE {m['ece_before']} -> {m['ece_after']}")
for name, v in m["per_class"].items():
    test = m.get("test", {}).get("per_class", {}).get(name, {})
    print(f"  {name:12s} val mAP50 {v['mAP50']}  test mAP50 {test.get('mAP50')}")
print("dispersion", card.dispersion)
PY
