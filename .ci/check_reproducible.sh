#!/usr/bin/env bash
# Strict nbval of the notebooks under several floating-point code paths of this one machine.
#
# Stored notebook outputs are compared as text on every machine that runs the tests. A number
# whose printed digits depend on summation order (which MKL kernel, which vector width, how many
# threads) passes where it was stored and fails elsewhere. This script replays the notebooks
# under the code paths we can reach here, so such a number is caught before it lands:
#   default   MKL and ATen pick the best kernels for this CPU, torch's default thread count
#   avx2      MKL_CBWR=AVX2 and ATEN_CPU_CAPABILITY=avx2: what an AVX2-only machine computes
#   compat1   MKL_CBWR=COMPATIBLE (MKL's reference code path), one thread
#   default1  best kernels, one thread (different reduction splits than two threads)
#
#   bash .ci/check_reproducible.sh                          # every notebook, every code path
#   bash .ci/check_reproducible.sh notebooks/01_*.ipynb     # some notebooks
#   CONFIGS="default compat1" bash .ci/check_reproducible.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3
notebooks=("$@")
[ ${#notebooks[@]} -eq 0 ] && notebooks=(notebooks/*.ipynb)
configs=${CONFIGS:-"default avx2 compat1 default1"}

run() {  # run NAME ENV...: strict nbval under the given environment
  local name=$1
  shift
  local start=$SECONDS
  local log="/tmp/nbval_${name}_$$.log"  # per process: several checks may run at once
  if env "$@" python -m pytest -q -p no:cacheprovider --nbval "${notebooks[@]}" >"$log" 2>&1; then
    echo "PASS  $name ($((SECONDS - start)) s)"
  else
    echo "FAIL  $name ($((SECONDS - start)) s): see $log"
    grep -E "^(FAILED|ERROR)" "$log" | head -20
    failed=1
  fi
}

failed=0
for config in $configs; do
  case $config in
    default) run default ;;
    avx2) run avx2 MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 ;;
    compat1) run compat1 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ;;
    default1) run default1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ;;
    *) echo "unknown config $config (known: default avx2 compat1 default1)"; exit 2 ;;
  esac
done
exit $failed
