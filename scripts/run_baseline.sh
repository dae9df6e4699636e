#!/usr/bin/env bash
# Reproduce the engine baseline: squish against mlx_lm.stream_generate, same model and prompts, one run.
# Run it on an idle machine; the result is appended to benchmarks/results/.
#   scripts/run_baseline.sh            full run (20 measured runs per side, 10-turn curve)
#   scripts/run_baseline.sh --quick    under a minute on the embedded model
set -euo pipefail
cd "$(dirname "$0")/.."
uv sync --quiet
uv run squish bench "$@"
