#!/usr/bin/env bash
# COLMAP for `ns-process-data --colmap-cmd`, with two fixes:
# - a bounded number of CPU threads: nerfstudio calls `<colmap-cmd> <subcommand> <options>` without a thread option,
#   so COLMAP would use every core. The count comes from $COLMAP_NUM_THREADS (default 1).
# - option names of newer COLMAP: 3.13 renamed --SiftExtraction.* / --SiftMatching.* options such as use_gpu to
#   --FeatureExtraction.* / --FeatureMatching.* and dropped the old names, which nerfstudio 1.1.5 still passes. An
#   option the subcommand's `-h` does not list is renamed to the Feature* spelling when that one is listed.
# The COLMAP executable comes from $COLMAP_EXE (default colmap).
set -euo pipefail
exe="${COLMAP_EXE:-colmap}"
threads="${COLMAP_NUM_THREADS:-1}"
if [[ $# -eq 0 || "$1" == -* ]]; then exec "$exe" "$@"; fi
sub="$1"; shift
help="$("$exe" "$sub" -h 2>&1 || true)"
has() { grep -q -- "--$1 " <<<"$help"; }

args=()
for arg in "$@"; do
  if [[ "$arg" =~ ^--Sift(Extraction|Matching)\.([A-Za-z_]+)(=.*)?$ ]]; then
    name="Sift${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"; renamed="Feature${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
    if ! has "$name" && has "$renamed"; then arg="--$renamed${BASH_REMATCH[3]}"; fi
  fi
  args+=("$arg")
done

case "$sub" in
  feature_extractor) candidates=(SiftExtraction.num_threads FeatureExtraction.num_threads) ;;
  *_matcher)         candidates=(SiftMatching.num_threads FeatureMatching.num_threads) ;;
  mapper)            candidates=(Mapper.num_threads) ;;
  *)                 candidates=() ;;
esac
for option in "${candidates[@]}"; do
  if has "$option"; then args+=("--$option" "$threads"); break; fi
done
exec "$exe" "$sub" "${args[@]}"
