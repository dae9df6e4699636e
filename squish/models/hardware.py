"""What this machine can hold: backend, RAM and disk, whether a model fits, and which to recommend.

Detection never imports MLX (it runs in the CLI and the UI); the backend is inferred from the
platform and the installed MLX wheels, the way MLX picks it.
"""

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

from ..engine.memory import GB, backend_name
from . import catalog
from .store import models_dir

# Unified memory: macOS lets the GPU wire about two thirds of RAM by default; keep CPU and CUDA
# hosts to the same share so the rest of the machine keeps working.
MEMORY_SHARE = 0.67
# Bytes that must stay free on disk after a download: the larger of these two.
DISK_MARGIN_BYTES = 500_000_000
DISK_MARGIN_SHARE = 0.05
# The MLX CPU backend decodes slowly (about 9 tok/s for the 135M model on 2 cores); bigger
# models fit in RAM but answer too slowly to recommend.
CPU_MAX_PARAMS_B = 1.0


@dataclass(frozen=True)
class Hardware:
    backend: str  # Metal, CUDA or CPU
    chip: str
    total_ram_gb: float
    available_ram_gb: float
    free_disk_gb: float
    gpu_memory_gb: float | None = None  # CUDA only: the device's memory

    @property
    def model_memory_gb(self) -> float:
        """The memory models run in: the GPU's own on CUDA, unified RAM otherwise."""
        return self.gpu_memory_gb or self.total_ram_gb

    @property
    def memory_budget_gb(self) -> float:
        """The most a model may take now: a share of its memory, and on RAM no more than is free."""
        budget = self.model_memory_gb * MEMORY_SHARE
        if not self.gpu_memory_gb:
            budget = min(budget, self.available_ram_gb)
        return round(budget, 2)

    def as_dict(self) -> dict:
        return {**asdict(self), "memory_budget_gb": self.memory_budget_gb}


def chip_name() -> str:
    if platform.system() == "Darwin":
        try:
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


def cuda_memory_gb() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return round(int(out.split()[0]) * 1024 * 1024 / GB, 1)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds (or will hold) `path`."""
    return shutil.disk_usage(existing_ancestor(path)).free


def detect(home: Path | None = None) -> Hardware:
    memory = psutil.virtual_memory()
    backend = backend_name()
    return Hardware(
        backend=backend,
        chip=chip_name(),
        total_ram_gb=round(memory.total / GB, 1),
        available_ram_gb=round(memory.available / GB, 1),
        free_disk_gb=round(free_disk_bytes(models_dir(home)) / GB, 1),
        gpu_memory_gb=cuda_memory_gb() if backend == "CUDA" else None,
    )


def describe() -> dict:
    """The machine as every benchmark result records it (chip, cores, RAM, OS, versions, backend)."""

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


def disk_margin_bytes(download_bytes: int) -> int:
    return max(DISK_MARGIN_BYTES, int(download_bytes * DISK_MARGIN_SHARE))


def disk_fits(download_bytes: int, free_bytes: int) -> bool:
    return download_bytes + disk_margin_bytes(download_bytes) <= free_bytes


FIT_NOTES = {"yes": "fits", "tight": "tight: close other apps first", "no": "too big for this machine"}


def fit(ram_bytes: int, hw: Hardware) -> str:
    """`yes`: fits now; `tight`: fits this machine once memory is freed; `no`: too big for it.

    FIT_NOTES says each in words, wherever squish shows it."""
    if ram_bytes > hw.model_memory_gb * GB * MEMORY_SHARE:
        return "no"
    if ram_bytes > hw.memory_budget_gb * GB:
        return "tight"
    return "yes"


def recommend(hw: Hardware) -> catalog.CatalogModel | None:
    """The largest 4-bit catalog model that fits now (RAM and disk); None: stay on the embedded one."""
    best = None
    for model in catalog.entries():
        if model.embedded or fit(model.ram().total_bytes, hw) != "yes":
            continue
        if not disk_fits(model.size_bytes, int(hw.free_disk_gb * GB)):
            continue
        if hw.backend == "CPU" and model.base.params_b > CPU_MAX_PARAMS_B:
            continue
        if best is None or model.base.params_b > best.base.params_b:
            best = model
    return best
