#!/usr/bin/env bash
# Reproduce the engine baseline: squish against mlx_lm.stream_generate (and llama.cpp with
# --anchor llama.cpp), same model and prompts, one run. Run it on an idle machine; the result is
# appended to benchmarks/results/ (benchmarks/README.md has the official commands).
#   scripts/run_baseline.sh                          full run (20 interleaved rounds, 10-turn curve)
#   scripts/run_baseline.sh --quick --anchor llama.cpp
set -euo pipefail
cd "$(dirname "$0")/.."
uv sync --quiet
uv run squish bench "$@"
