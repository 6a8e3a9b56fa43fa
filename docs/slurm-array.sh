#!/bin/bash
# Explain a folder of photos with a Slurm job array: 4 tasks, task K explains
# every 4th image from the K-th (sorted by path) and writes below out/, as one
# run without --shard would. Submit from the folder that holds photos/:
#
#   sbatch docs/slurm-array.sh
#
# A task that failed (node lost, time limit, killed) is rerun alone; give it
# the array's size, since a one-task array has SLURM_ARRAY_TASK_COUNT=1:
#
#   SHARDS=4 sbatch --array=2 docs/slurm-array.sh
#
# --skip-existing makes the rerun resume: the images whose heatmaps exist are
# skipped. Exit code 1 means some image failed (corrupt, unreadable: each is
# named in the log), 2 a usage or model error.
#SBATCH --job-name=lrp-heatmap
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --output=lrp-heatmap-%A_%a.log
set -euo pipefail

N="${SHARDS:-$SLURM_ARRAY_TASK_COUNT}"
# the bundled model; for a downloaded one (-m vgg16), run `lrp-heatmap fetch
# vgg16` once before submitting and add --offline, so no task downloads it
lrp-heatmap photos/ --recursive --shard "$SLURM_ARRAY_TASK_ID/$N" -o out/ \
    --skip-existing --jobs "${SLURM_CPUS_PER_TASK:-1}" --quiet
