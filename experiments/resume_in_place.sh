# Sourced by the experiment queues (run_ablations.sh, run_data_efficiency.sh): how a queued row continues a cut
# run in its own folder. `resume_in_place DIR` sets RESUME (ckpt_path=DIR, which resumes the folder's newest
# checkpoint) and RUN_ID (FER_LIGHTNING_RUN_ID=<the folder's own run id>, without which the folder refuses a new
# run); both stay empty when DIR holds no checkpoint yet.
resume_in_place() {
  local dir="$1"
  RESUME=() RUN_ID=()
  if compgen -G "$dir/checkpoints/*.ckpt" > /dev/null && [ -f "$dir/.run_id.json" ]; then
    RESUME=("ckpt_path=$dir")
    RUN_ID=("FER_LIGHTNING_RUN_ID=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' \
      "$dir/.run_id.json")")
  fi
}
