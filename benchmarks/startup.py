"""Startup: how long `squish --help` and `import squish` take, and the RSS before a model loads.

Startup is a metric of the project (DEVELOPERS.md): `squish --help` well under a second and the
process under 200 MB RSS before the model is loaded. Each measurement is a fresh subprocess;
the commands are interleaved round by round with their baselines measured in the same run
(the bare interpreter, and mlx_lm's own `--help`), after warm-up rounds that are discarded.

    uv run python benchmarks/startup.py                # 20 rounds after 5 warm-ups
    uv run python benchmarks/startup.py --runs 5       # a short check
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from squish.cli.bench_results import save
from squish.cli.bench_stats import percentile, spread
from squish.models.hardware import describe

HELP_BUDGET_S = 1.0
RSS_BUDGET_MB = 200.0

# What the chat app has imported when it asks the engine for the model: the app and its screens,
# the engine with mlx and mlx-lm (the engine thread imports them before the load), and the
# native kernels. Printed: RSS in MB and whether mlx/textual were imported.
BEFORE_LOAD = """
import json, sys, psutil
import squish.tui.app, squish.engine.engine, squish.engine.loader, squish.engine.native
import mlx.core, mlx_lm.utils
try:
    import squish_native
except ImportError:
    pass
print(json.dumps({"rss_mb": psutil.Process().memory_info().rss / 1e6}))
"""

IMPORT_ONLY = """
import time
start = time.perf_counter()
import squish, squish.cli
elapsed = time.perf_counter() - start
import json, sys, psutil
print(json.dumps({"rss_mb": psutil.Process().memory_info().rss / 1e6, "import_s": elapsed,
                  "heavy": sorted(m for m in ("mlx", "textual", "mlx_lm", "transformers") if m in sys.modules)}))
"""

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import squish": [sys.executable, "-c", IMPORT_ONLY],
    "squish --help": [sys.executable, "-m", "squish", "--help"],
    "mlx_lm.generate --help": [sys.executable, "-m", "mlx_lm", "generate", "--help"],
    "app before model load": [sys.executable, "-c", BEFORE_LOAD],
}


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[-1][:40]!r} failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed, done.stdout


def stats(values: list[float]) -> dict:
    return {**spread(values), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="measured rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="discarded rounds first (at least 5)")
    parser.add_argument("--results-dir", default="benchmarks/results", help="where the result file is appended")
    args = parser.parse_args()
    if args.warmup < 5 or args.runs < 2:
        parser.error("--warmup must be at least 5 and --runs at least 2")

    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    rss: dict[str, list[float]] = {"import squish": [], "app before model load": []}
    import_s: list[float] = []
    heavy: set[str] = set()
    for round_ in range(args.warmup + args.runs):
        for name, command in COMMANDS.items():
            elapsed, out = timed(command)
            if round_ < args.warmup:
                continue
            seconds[name].append(elapsed)
            if name in rss:
                reading = json.loads(out)
                rss[name].append(reading["rss_mb"])
                heavy.update(reading.get("heavy", []))
                if "import_s" in reading:
                    import_s.append(reading["import_s"])
        print(f"round {round_ + 1}/{args.warmup + args.runs}", file=sys.stderr, flush=True)

    help_p50 = percentile(seconds["squish --help"], 50)
    rss_p50 = percentile(rss["app before model load"], 50)
    result = {
        "name": "startup",
        "hardware": describe(),
        "plan": {"runs": args.runs, "warmup": args.warmup},
        "seconds": {name: stats(values) for name, values in seconds.items()},
        "rss_mb": {name: stats(values) for name, values in rss.items()},
        "import_squish_in_process_s": stats(import_s),
        "import_squish_loads": sorted(heavy),
        "budgets": {
            "help_s": HELP_BUDGET_S,
            "help_p50_s": help_p50,
            "help_ok": help_p50 < HELP_BUDGET_S,
            "rss_mb": RSS_BUDGET_MB,
            "rss_before_load_p50_mb": rss_p50,
            "rss_ok": rss_p50 < RSS_BUDGET_MB,
        },
    }
    path = save(result, Path(args.results_dir), "startup")
    for name, s in result["seconds"].items():
        print(f"{name:24} p50 {s['p50'] * 1000:7.1f} ms  p95 {s['p95'] * 1000:7.1f} ms  sd {s['stddev'] * 1000:6.1f} ms")
    for name, s in result["rss_mb"].items():
        print(f"{name:24} RSS p50 {s['p50']:7.1f} MB")
    print(f"import squish, squish.cli in process: p50 {percentile(import_s, 50) * 1000:.1f} ms")
    print(f"import squish loads: {', '.join(result['import_squish_loads']) or 'none of mlx, mlx_lm, textual, transformers'}")
    print(
        f"budgets: --help {help_p50 * 1000:.0f} ms < {HELP_BUDGET_S * 1000:.0f} ms: {result['budgets']['help_ok']}; "
        f"RSS before load {rss_p50:.0f} MB < {RSS_BUDGET_MB:.0f} MB: {result['budgets']['rss_ok']}"
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
