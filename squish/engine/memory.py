"""Memory and hardware readings. MLX readings must run on the engine thread."""

import os
import platform

import psutil

GB = 1e9


def process_rss_gb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / GB


def system_available_gb() -> float:
    return psutil.virtual_memory().available / GB


def backend_name() -> str:
    import mlx.core as mx

    if mx.metal.is_available():
        return "Metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "CUDA"
    return "CPU"


def mlx_memory_gb() -> tuple[float, float, float]:
    """(active, peak, cache) MLX memory in GB."""
    import mlx.core as mx

    return mx.get_active_memory() / GB, mx.get_peak_memory() / GB, mx.get_cache_memory() / GB


def chip_name() -> str:
    if platform.system() == "Darwin":
        try:
            import subprocess

            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        except OSError:
            return platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict:
    """Machine metadata recorded with every benchmark result."""
    from importlib.metadata import PackageNotFoundError, version

    def package_version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "chip": chip_name(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / GB, 1),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "mlx": package_version("mlx"),
        "mlx_lm": package_version("mlx-lm"),
        "backend": backend_name(),
    }
