#!/usr/bin/env bash
# Rebuild the report (collapse.csv, tables, figures) of config/experiments/NAME.yaml from what
# its results directory holds now, with this checkout's code, and run nothing else: only the
# report rules may run (--allowed-rules), so no training or evaluation job is scheduled even
# where this code would train or evaluate differently from the code that ran the experiment.
# Runs not finished yet are marked in the tables, not scored or averaged.
#   scripts/toy_report.sh toy-seeds                 # results/experiments/toy-seeds
#   scripts/toy_report.sh toy-seeds /elsewhere/toy-seeds [extra snakemake arguments]
set -euo pipefail
name=${1:?usage: scripts/toy_report.sh NAME [EXPERIMENT_DIR] [snakemake args]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
workdir=$repo/results/experiments/$name
if [[ $# -gt 0 && $1 != -* ]]; then
    workdir=$1
    shift
fi
[[ -d $workdir/results ]] || { echo "no results/ in $workdir" >&2; exit 1; }
snakemake=$repo/.venv/bin/snakemake
[[ -x $snakemake ]] || snakemake=snakemake
rules=(collapse tables figures)
exec "$snakemake" --snakefile "$repo/workflow/Snakefile" --directory "$workdir" \
    --configfile "$repo/config/experiments/$name.yaml" --cores "${CORES:-1}" \
    "${rules[@]}" --forcerun "${rules[@]}" --allowed-rules "${rules[@]}" "$@"
