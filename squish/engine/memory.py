"""Memory readings, and which MLX backend this machine runs. MLX readings run on the engine thread.

`backend_name` needs no MLX (the CLI and the app call it too, through squish.models.hardware):
it infers the backend the way MLX picks its default device, from the platform and the installed
MLX wheels.
"""

import os
import platform
import shutil
from importlib.metadata import distributions

import psutil

GB = 1e9


def process_rss_gb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / GB


def system_available_gb() -> float:
    return psutil.virtual_memory().available / GB


def backend_name() -> str:
    """Metal (Apple silicon), CUDA (an mlx-cuda wheel and an NVIDIA driver) or CPU."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "Metal"
    names = {(dist.metadata["Name"] or "").lower() for dist in distributions()}
    if any(name.startswith(("mlx-cuda", "mlx_cuda")) for name in names) and shutil.which("nvidia-smi"):
        return "CUDA"
    return "CPU"


def mlx_memory_gb() -> tuple[float, float, float]:
    """(active, peak, cache) MLX memory in GB."""
    import mlx.core as mx

    return mx.get_active_memory() / GB, mx.get_peak_memory() / GB, mx.get_cache_memory() / GB
