#!/usr/bin/env bash
# Build the bundled default model detector/assets/railcar_obb.pt + railcar_obb.json:
#   0. the pretrained start: `python -m detector.train.pretrained fetch` (once; sha256-pinned);
#   1. experiment=EXPERIMENT (default bundled_v03): 200 domain-randomised synthetic yards
#      (1024 px at 0.5 m/px, dense strings, hard negatives, 10% empty yards), fine-tuned
#      from Ultralytics' DOTA-pretrained yolo26n-obb, training capped at HOURS (2 on a
#      2-core CPU);
#   2. recalibration on 24 freshly generated scenes of the same settings never used in
#      training (whole scenes through the real tiled inference), which also refits the
#      per-scene dispersion of the counts;
#   3. the new bundle replaces detector/assets/railcar_obb.* (temp names + rename).
#
#   scripts/build_bundled_model.sh                                  # CPU, as shipped
#   HOURS=4 scripts/build_bundled_model.sh trainer.device=0 trainer.batch=32 trainer.workers=8
#
# Resumable: the run folder is fixed (BUILD_DIR, default outputs/train/bundled_build); rerun
# the same command after an interruption and training resumes from its last.pt (Ultralytics
# checkpoints every epoch); finished steps are skipped. Extra arguments are Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

run="${BUILD_DIR:-outputs/train/bundled_build}"
calib="$run/calibration_scenes"
assets="detector/assets"
start=$(date +%s)

experiment="${EXPERIMENT:-bundled_v03}"
if [[ ! -f "$run/railcar_obb.json" ]]; then
    python -m detector.train.pretrained fetch
    resume=()
    last="$run/ultralytics/weights/last.pt"
    [[ -f "$last" ]] && resume=("trainer.resume=$last")
    python -m detector.train experiment="$experiment" trainer.time="${HOURS:-2}" \
        hydra.run.dir="$run" "${resume[@]}" "$@"
fi

# Calibration scenes: the experiment's scene settings, other seeds (made once, then reused).
python - "$calib" "$experiment" <<'PY'
import sys

from detector.evaluate.experiments import make_scenes, training_scene_settings

make_scenes(sys.argv[1], 24, 5000, {**training_scene_settings(sys.argv[2]), "jobs": 1})
PY
python -m detector.train.recalibrate weights="$run/railcar_obb.pt" scenes="$calib"

mkdir -p "$assets"
# Copy under temporary names, then rename, so the package never holds half a bundle.
cp -- "$run/railcar_obb.pt" "$assets/.railcar_obb.pt.partial"
cp -- "$run/railcar_obb.json" "$assets/.railcar_obb.json.partial"
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
