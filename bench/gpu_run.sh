#!/usr/bin/env bash
# One prepared GPU slot (~15 minutes of device time, two calls back to back):
#   here:    bench/gpu_wheels.sh
#   call 1:  run(command="bench/gpu_run.sh stage", carry=[".whl-a"], timeout_s=120)
#   call 2:  run(command="bench/gpu_run.sh", carry=[".whl-b", "bench/out/data/ml1m-seq-full",
#                "bench/results/gpu_checkpoints"], timeout_s=600)
# Call 2 installs as the README's "On a current stack / a GPU machine" says (the image's
# own torch, numpy and triton kept; the carried wheels instead of an index), runs the ssm
# and model tests, checks and times the backends (bench/gpu_checks.py), trains Mamba4Rec on
# ML-1M at the paper config with train_mode all_positions to early stop (or its budget),
# then BiMamba4Rec in prefix mode for the minutes left, resuming from
# bench/results/gpu_checkpoints/ when a checkpoint is committed there and leaving the new
# one in $OUT/ for the next slot.  Everything it measures lands in $OUT.
#
# Dry run on a CPU (no wheels, no install: the environment at hand), every step at toy size:
#   bench/gpu_run.sh --dry-run      -> bench/out/gpu-dry/ (the triton backend under TRITON_INTERPRET=1,
#                                      a 60-user ML-1M subset, BiMamba4Rec run twice to show the resume)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --dry-run ]; then
  OUT=bench/out/gpu-dry; rm -rf "$OUT"; mkdir -p "$OUT"; start=$SECONDS
  export OMP_NUM_THREADS=1  # TRITON_INTERPRET=1 for the backend checks only: the tests set it where they need it
  small=(--device cpu --threads 1 --users 60 --eval-batch-size 256 --ssm-backend torch)
  {
    python3 -c "import numpy, torch, pandas; print('stack:', 'numpy', numpy.__version__, 'torch', torch.__version__, 'pandas', pandas.__version__)"
    timeout 900 python3 -m pytest -q -p no:cacheprovider -x tests/test_scan.py tests/test_models.py tests/test_scan_triton.py tests/test_compat.py 2>&1 | tail -3
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "tests failed"; exit 1; }
    echo "tests: $((SECONDS - start)) s"
    TRITON_INTERPRET=1 python3 bench/gpu_checks.py --device cpu --out "$OUT/gpu_checks.json" || exit 1
    echo "checks: $((SECONDS - start)) s"
    python3 bench/paper_cpu.py --dataset ml-1m --run mamba4rec-ap --seed 2020 "${small[@]}" --budget-min 0.5 \
      --out "$OUT/gpu_ml-1m_mamba4rec-ap.json" || exit 1
    echo "mamba4rec: $((SECONDS - start)) s"
    for slot in 1 2; do  # the second slot resumes from the first one's checkpoint
      python3 bench/paper_cpu.py --dataset ml-1m --run bimamba4rec-prefix --seed 2020 "${small[@]}" --budget-min 0.5 \
        --eval-every-min 0.2 --set MAX_ITEM_LIST_LENGTH=20 --checkpoint "$OUT/ml-1m-bimamba4rec-prefix-2020.pth" \
        --out "$OUT/gpu_ml-1m_bimamba4rec-prefix-slot$slot.json" || exit 1
    done
    python3 -c "import json, sys; r = [json.load(open(f'$OUT/gpu_ml-1m_bimamba4rec-prefix-slot{i}.json'))['runs'][0] for i in (1, 2)]; \
print('resume:', [x['resumed_from_checkpoint'] for x in r]); sys.exit(0 if [x['resumed_from_checkpoint'] for x in r] == [False, True] else 1)" || exit 1
    echo "dry run total: $((SECONDS - start)) s"
  } 2>&1 | tee "$OUT/gpu_run.log"
  exit "${PIPESTATUS[0]}"
fi
OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
if [ "${1:-}" = stage ]; then  # call 1: keep the first half of the wheels on the machine
  mkdir -p /tmp/gpu-wheels && cp .whl-a/* /tmp/gpu-wheels/ && ls -la /tmp/gpu-wheels
  exit 0
fi
start=$SECONDS
left() { echo $(( ${1} - (SECONDS - start) )); }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  cp .whl-b/* /tmp/gpu-wheels/ && cat /tmp/gpu-wheels/ray-*.part-* > "/tmp/gpu-wheels/$(ls /tmp/gpu-wheels | grep part-aa | sed 's/.part-aa//')"
  rm -f /tmp/gpu-wheels/*.part-*
  pip() { python3 -m pip "$@" --no-index --find-links /tmp/gpu-wheels --no-build-isolation; }
  pip install -q --no-deps recbole==1.2.1 && pip install -q -e ".[test]" || exit 1
  python3 -c "import numpy, torch, triton, pandas, ray; print('stack:', 'numpy', numpy.__version__, 'torch', torch.__version__, 'triton', triton.__version__, 'pandas', pandas.__version__, 'ray', ray.__version__)"
  echo "install: $((SECONDS - start)) s"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -x tests/test_scan.py tests/test_models.py tests/test_scan_triton.py tests/test_compat.py 2>&1 | tail -5
  echo "tests: $((SECONDS - start)) s"
  timeout 120 python3 bench/gpu_checks.py --out "$OUT/gpu_checks.json"
  echo "checks: $((SECONDS - start)) s"
  timeout $(left 470) python3 bench/paper_cpu.py --dataset ml-1m --run mamba4rec-ap --seed 2020 --device cuda \
    --threads 8 --budget-min 3.5 --eval-batch-size 4096 --out "$OUT/gpu_ml-1m_mamba4rec-ap.json"
  echo "mamba4rec: $((SECONDS - start)) s"
  minutes=$(python3 -c "print(max(0.5, ($(left 540)) / 60 - 1.0))")
  ckpt=bench/results/gpu_checkpoints/ml-1m-bimamba4rec-prefix-2020.pth
  [ -f "$ckpt" ] && cp "$ckpt" "$OUT/"
  timeout $(left 585) python3 bench/paper_cpu.py --dataset ml-1m --run bimamba4rec-prefix --seed 2020 --device cuda \
    --threads 8 --budget-min "$minutes" --eval-every-min 1 --eval-batch-size 4096 \
    --checkpoint "$OUT/ml-1m-bimamba4rec-prefix-2020.pth" --out "$OUT/gpu_ml-1m_bimamba4rec-prefix.json"
  echo "total: $((SECONDS - start)) s"
} 2>&1 | tee "$OUT/gpu_run.log"
