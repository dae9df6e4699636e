"""One kernel change, measured: the quantized matmul of a base commit's kernels against the
working tree's, in one process.

A Python extension can be loaded once per process, so two builds of squish-native cannot be
interleaved there. This compiles both revisions of the kernel sources (native/csrc/kernels_*.cpp,
or kernels.cpp before they were split) into one small executable
(benchmarks/kernel_ab.cpp, one namespace each, the flags of native/CMakeLists.txt for the ISA)
and runs their matmuls on one thread, alternating which goes first, on the embedded model's
shapes and pass sizes: 1 row (decode), 2-4 and 9-16 (drafts checked, prefill). Per case: >= 5
warm-ups discarded, p50/p95/p99 and stddev of each side, the paired Wilcoxon p-value, and
whether the outputs are bit for bit the same (a change of summation order shows here first).
Results are appended to benchmarks/results/<timestamp>_kernel-ab.json.

    uv run python benchmarks/kernel_ab.py --base HEAD [--isa avx512] [--runs 30] [--rows 1,2,4,9,16]

Needs git and a C++ compiler (CXX, else c++); shares native/csrc/common.h between the two
sides, so a base whose common.h differs (in more than comments) is refused.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from squish.cli.bench_results import commit, save
from squish.cli.bench_stats import spread, wilcoxon
from squish.models.hardware import describe

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "native" / "csrc"
CMAKE = (ROOT / "native" / "CMakeLists.txt").read_text()
# The flags native/CMakeLists.txt compiles the kernel sources with: its KERNEL_FLAGS_<isa>, and
# the options before ${KERNEL_FLAGS_${isa}} on the kernels' target.
FLAGS = {isa: flags.replace('""', "").split() for isa, flags in re.findall(r"set\(KERNEL_FLAGS_(\w+) ?(.*)\)", CMAKE)}
OPTIONS = re.search(r"target_compile_options\(kernels_\$\{isa\} PRIVATE (.*?) \$\{KERNEL_FLAGS", CMAKE).group(1).split()
# (name, K, N, bits): the embedded model's fused q/k/v, o, gate/up and down projections, and the
# tied 8-bit output head.
SHAPES = [("qkv", 576, 960, 4), ("o", 576, 576, 4), ("gate_up", 576, 3072, 4), ("down", 1536, 576, 4),
          ("head", 576, 49152, 8)]
ROWS = [1, 2, 4, 9, 16]


# The per-ISA kernel sources, then and now: kernels.cpp until the split into these files (the
# tiles of each ISA in headers since 2026-12-02).
KERNEL_FILES = ["kernels.cpp", "kernels_qmm.cpp", "kernels_qmm_avx512.h", "kernels_qmm_avx2.h", "kernels_float.cpp",
                "kernels_isa.h"]


def git_show(rev: str, path: str) -> str | None:
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    return None if out.returncode else out.stdout


def sources(rev: str | None) -> dict[str, str]:
    """The kernel files of `rev` (None: the working tree), by name."""
    found = {}
    for name in KERNEL_FILES:
        text = (CSRC / name).read_text() if rev is None and (CSRC / name).exists() else None
        if rev is not None:
            text = git_show(rev, f"native/csrc/{name}")
        if text is not None:
            found[name] = text
    if not any(name.endswith(".cpp") for name in found):
        raise SystemExit(f"kernel_ab: no kernel sources in native/csrc at {rev or 'the working tree'}")
    return found


def code(text: str) -> list[str]:
    """The lines of a C++ header without its // comments and blank lines."""
    return [kept for line in text.splitlines() if (kept := line.split("//")[0].strip())]


def build(base: str, isa: str, work: Path) -> Path:
    common = (CSRC / "common.h").read_text()
    if code(git_show(base, "native/csrc/common.h") or "") != code(common):
        raise SystemExit(f"kernel_ab: native/csrc/common.h differs at {base}; the two sides must share it")
    cxx = os.environ.get("CXX") or shutil.which("c++") or "g++"
    (work / "common.h").write_text(common)
    flags = [*OPTIONS, "-std=c++20", *FLAGS[isa]]
    objects = []
    for side, rev in (("kernel_a", base), ("kernel_b", None)):
        folder = work / side
        folder.mkdir()
        (folder / "common.h").write_text(common)
        files = sources(rev)
        for name, text in files.items():
            (folder / name).write_text(text)
        for name in files:
            if name.endswith(".cpp"):
                obj = folder / (name[:-4] + ".o")
                cmd = [cxx, *flags, f"-I{folder}", f"-DSQ_ISA={side}", f"-DSQ_ISA_{isa}=1", "-c", str(folder / name), "-o", str(obj)]
                subprocess.run(cmd, check=True, timeout=300)
                objects.append(str(obj))
    exe = work / "kernel_ab"
    subprocess.run([cxx, "-O2", "-std=c++20", f"-I{work}", str(ROOT / "benchmarks" / "kernel_ab.cpp"), *objects, "-o", str(exe)],
                   check=True, timeout=300)
    return exe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD", help="the commit whose kernels are side a (default HEAD)")
    parser.add_argument("--isa", choices=sorted(FLAGS), help="kernel path (default: the best this CPU runs)")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="rows of x per case (default: 1,2,4,9,16)")
    parser.add_argument("--runs", type=int, default=30, help="measured sweeps per side and case")
    parser.add_argument("--warmup", type=int, default=5, help="discarded sweeps per side (at least 5)")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows must be comma-separated integers, got {args.rows!r}")
    if not rows or min(rows) < 1:
        parser.error("--rows must be at least 1")
    if args.isa is None:
        import squish_native

        if not squish_native.AVAILABLE:
            raise SystemExit(f"kernel_ab: give --isa ({squish_native.reason})")
        args.isa = squish_native.supported_isas()[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="kernel-ab-") as tmp:
        exe = build(args.base, args.isa, Path(tmp))
        print(f"{args.base} (a) against the working tree (b), {args.isa}, one thread, {args.runs} runs")
        print(f"{'shape':8} {'rows':>4} {'a p50 ms':>9} {'b p50 ms':>9} {'b/a':>6} {'p':>7}  identical")
        for name, k, n, bits in SHAPES:
            for m in rows:
                out = subprocess.run([str(exe), str(k), str(n), str(bits), str(m), str(args.runs), str(args.warmup)],
                                     capture_output=True, text=True, check=True, timeout=600)
                run = json.loads(out.stdout)
                a, b = spread(run["a_ms"]), spread(run["b_ms"])
                test = wilcoxon(run["b_ms"], run["a_ms"])
                case = {"shape": name, "K": k, "N": n, "bits": bits, "rows": m, "a_ms": a, "b_ms": b,
                        "ratio_p50": b["p50"] / a["p50"], "wilcoxon": test, "runs": run,
                        "identical": run["outputs_differing"] == 0}
                cases.append(case)
                print(f"{name:8} {m:>4} {a['p50']:9.3f} {b['p50']:9.3f} {case['ratio_p50']:6.3f} "
                      f"{test['p_value']:7.2g}  {'yes' if case['identical'] else 'no, max ' + format(run['max_abs_diff'], '.3g')}")
    result = {"name": "kernel-ab", "commit": commit(), "base": args.base, "isa": args.isa,
              "plan": {"runs": args.runs, "warmup": args.warmup, "threads": 1, "rows": rows}, "hardware": describe(), "cases": cases}
    print(f"saved {save(result, args.results_dir, 'kernel-ab')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
