#!/usr/bin/env bash
# Build the bundled default model detector/assets/railcar_obb.pt + railcar_obb.json:
# generate synthetic yards, chip them, train yolo11n-obb, calibrate (experiment=synthetic_default).
# About 45-50 min on a 2-core CPU (training is capped by trainer.time).
#
#   scripts/build_bundled_model.sh                       # CPU, as shipped
#   scripts/build_bundled_model.sh trainer.device=0 trainer.batch=32 trainer.workers=8   # a GPU
#
# Extra arguments are Hydra overrides passed to `python -m detector.train`.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir="outputs/train/bundled_$(date +%Y-%m-%d_%H-%M-%S)"
assets="detector/assets"
start=$(date +%s)

python -m detector.train experiment=synthetic_default hydra.run.dir="$run_dir" "$@"

mkdir -p "$assets"
# Copy under temporary names, then rename, so the package never holds half a bundle.
cp -- "$run_dir/railcar_obb.pt" "$assets/.railcar_obb.pt.partial"
cp -- "$run_dir/railcar_obb.json" "$assets/.railcar_obb.json.partial"
mv -- "$assets/.railcar_obb.pt.partial" "$assets/railcar_obb.pt"
mv -- "$assets/.railcar_obb.json.partial" "$assets/railcar_obb.json"

python - "$assets/railcar_obb.pt" "$(( $(date +%s) - start ))" <<'PY'
import sys

from detector.bundle import read_card

card = read_card(sys.argv[1])  # checks the sha256 of the copied weights
m = card["metrics"]
print(f"bundled model: {sys.argv[1]} (+ .json), built in {int(sys.argv[2]) / 60:.1f} min")
print(f"val  mAP50 {m['mAP50']}  mAP50-95 {m['mAP50-95']}  ECE {m['ece_before']} -> {m['ece_after']}")
for name, v in m["per_class"].items():
    test = m.get("test", {}).get("per_class", {}).get(name, {})
    print(f"  {name:12s} val mAP50 {v['mAP50']}  test mAP50 {test.get('mAP50')}")
PY
