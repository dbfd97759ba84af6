#!/usr/bin/env bash
# The package installs outside our lock: build a wheel, install it into a fresh venv that holds
# only torch (as a user's machine or Colab would), then import it, run the README's quick start
# and one notebook under strict nbval. Not part of CI (it downloads the dependency ranges).
#
#   bash .ci/check_wheel.sh [notebooks/01_gaussian_processes.ipynb]
set -euo pipefail
cd "$(dirname "$0")/.."
notebook=${1:-notebooks/01_gaussian_processes.ipynb}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q torch==2.13.0
"$py" -m pip wheel -q --no-deps -w "$work/dist" .
# Keep the torch we have: without the constraint, pip would satisfy mup's torchvision with the
# newest release and replace torch to match it.
echo "torch==2.13.0" >"$work/constraints.txt"
"$py" -m pip install -q -c "$work/constraints.txt" "$work"/dist/ntk_lab-*.whl
repo=$PWD
cd "$work"  # from here on `import ntk` can only find the installed wheel
# torchvision arrives with mup (declared, never imported): ntk must not need it.
"$py" -c "import ntk, sys; print('import ntk:', ntk.__version__, ntk.__file__); assert 'torchvision' not in sys.modules"

# The README's quick start, exactly as written there.
README="$repo/README.md" "$py" - <<'EOF'
import os
import re
from pathlib import Path

quick = Path(os.environ["README"]).read_text().split("## Quick start", 1)[1]
code = re.search(r"```python\n(.*?)```", quick, re.S).group(1)
exec(compile(code, "README quick start", "exec"))
print("README quick start: ran")
EOF

# One notebook with the test tools only (no neural-tangents): its comparison cells must skip.
"$py" -m pip install -q pytest nbval ipykernel
cp -r "$repo/notebooks" .
"$py" -m pytest -q -p no:cacheprovider --nbval "$notebook"
echo "wheel check: PASS"
