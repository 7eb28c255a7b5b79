#!/usr/bin/env bash
# Run one of config/experiments/NAME.yaml in its own results directory:
#   scripts/toy_experiment.sh toy-sweep [extra snakemake arguments]
set -euo pipefail
name=${1:?usage: scripts/toy_experiment.sh NAME [snakemake args]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
workdir="$repo/results/experiments/$name"
mkdir -p "$workdir"
# The project's .venv (`make install`) if there is one, else the snakemake on PATH.
snakemake=$repo/.venv/bin/snakemake
[[ -x $snakemake ]] || snakemake=snakemake
exec "$snakemake" --snakefile "$repo/workflow/Snakefile" --directory "$workdir" \
    --configfile "$repo/config/experiments/$name.yaml" --cores "${CORES:-2}" "$@"
