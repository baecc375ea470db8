#!/usr/bin/env bash
# The recipe of models/ulm-30m: scripts/recipe.sh ulm-30m [RUNS_DIR] (all its stages, resumable).
exec "$(dirname "$0")/recipe.sh" ulm-30m "$@"
