#!/usr/bin/env bash
# Data-efficiency curves on a 2-core CPU: each arm trained for 15 epochs on a stratified, seeded share of Training
# (data.train_fraction), selected on PublicTest, scored on PrivateTest and CK+ dev (extra_test=ckplus).
#   FER2013_ROOT=../shared/data/fer2013.zip CKPLUS_ROOT=../shared/data/ckplus48_dev.zip \
#       bash experiments/scratch_vs_transfer/run_data_efficiency.sh [ARM:FRACTION[:SEED] ...]
# DRY_RUN=1 prints each row's overrides instead of running it. ARM is an experiment config (cpu_budget, efficientnet_lite0_probe, efficientnet_lite0); SEED defaults to 1.
# Runs land in outputs/data_eff/<arm>_f<fraction>[_s<seed>]/; a cut run resumes from its folder when the same row is
# queued again, and a finished one is skipped. Each finished run's metrics.json is copied next to this script
# (data_efficiency/), where experiments/scratch_vs_transfer/data_efficiency.py makes the table and the figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=experiments/resume_in_place.sh
source experiments/resume_in_place.sh
: "${FER2013_ROOT:?set FER2013_ROOT to FER2013 (zip, folder or csv)}"
: "${CKPLUS_ROOT:?set CKPLUS_ROOT to the CK+ dev set (zip or folder)}"
export WANDB_MODE="${WANDB_MODE:-offline}"
EPOCHS="${EPOCHS:-15}"
RESULTS=experiments/scratch_vs_transfer/data_efficiency
DEFAULT_ROWS=(efficientnet_lite0:0.05 cpu_budget:0.1 efficientnet_lite0_probe:0.1 efficientnet_lite0:0.1
              cpu_budget:0.25 efficientnet_lite0_probe:0.25 efficientnet_lite0:0.25 cpu_budget:0.5)
mkdir -p outputs/data_eff "$RESULTS"
for row in "${@:-${DEFAULT_ROWS[@]}}"; do
  IFS=: read -r arm fraction seed <<< "$row"
  seed="${seed:-1}"
  name="${arm}_f${fraction}"
  if [ "$seed" != 1 ]; then name="${name}_s${seed}"; fi
  dir="outputs/data_eff/$name"
  overrides=("+experiment=$arm" "data.root=$FER2013_ROOT" "data.train_fraction=$fraction" "trainer.max_epochs=$EPOCHS"
             "seed=$seed" extra_test=ckplus logger=csv callbacks.progress_bar=null)
  if [ -n "${DRY_RUN:-}" ]; then echo "$name: ${overrides[*]}"; continue; fi  # the overrides, for tests
  if [ -f "$dir/metrics.json" ]; then
    echo "$name: done ($dir/metrics.json)"; cp "$dir/metrics.json" "$RESULTS/$name.json"; continue
  fi
  resume_in_place "$dir"  # a cut run continues in its own folder
  echo "$(date -u +%FT%TZ) $name ${RESUME[*]}"
  env "${RUN_ID[@]}" /usr/bin/time -f "$name wall %e s" python -m fer_lightning "${overrides[@]}" "${RESUME[@]}" \
      "hydra.run.dir=$dir" > "outputs/data_eff/$name.log" 2>&1
  tail -n 1 "outputs/data_eff/$name.log"
  cp "$dir/metrics.json" "$RESULTS/$name.json"
done
