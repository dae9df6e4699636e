"""`squish models`, `squish pull` and `squish rm`: list, download and delete models.

Downloads run here, on the main thread (plain Python networking, no MLX); Ctrl+C stops them and
the next pull resumes. Exit codes: 0 ok, 1 user error (unknown model, not enough disk), 2 system
error (network, corrupt download), 130 stopped.
"""

import json
import sys
import time

from .parser import models_parser, pull_parser, rm_parser


def size(nbytes: float) -> str:
    from ..models.store import human_size

    return human_size(nbytes)


def ago(stamp: float | None) -> str:
    if not stamp:
        return "never"
    seconds = time.time() - stamp
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} ago"
    return "just now"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def configured_default() -> str | None:
    """The default model from the config when it is ready here; None means the embedded model."""
    from ..errors import SquishError
    from ..models import settings, store

    name = settings.default_model()
    if name is None:
        return None
    try:
        store.resolve(name)
    except SquishError as exc:
        print(
            f"squish: warning: the default model is unavailable ({exc}); using {store.EMBEDDED_NAME}", file=sys.stderr
        )
        return None
    return name


SOURCES = {"embedded": "squish package", "squish": "squish pull", "hf-cache": "HF cache, another tool"}


def models(argv: list[str]) -> int:
    args = models_parser().parse_args(argv)
    from ..models import hardware, inventory, settings, store

    if args.set_default:
        display = store.resolve(args.set_default).name
        settings.set_default_model(display)
        print(f"default model: {display}")
        return 0
    hw = hardware.detect()
    local = inventory.local_models()
    partial = inventory.partial_downloads()
    rows = inventory.catalog_rows(hw, all_variants=args.all)
    recommended = hardware.recommend(hw)
    default = settings.default_model()
    if args.json:
        print(
            json.dumps(
                {
                    "hardware": hw.as_dict(),
                    "recommended": recommended.id if recommended else None,
                    "default_model": default or store.EMBEDDED_NAME,
                    "local": inventory.as_dicts(local),
                    "partial": inventory.as_dicts(partial),
                    "catalog": inventory.as_dicts(rows),
                }
            )
        )
        return 0
    print(
        f"this machine: {hw.backend} backend, {hw.chip}, {hw.total_ram_gb:.1f} GB RAM "
        f"({hw.available_ram_gb:.1f} GB available), {hw.free_disk_gb:.1f} GB free disk; "
        f"models up to {hw.memory_budget_gb:.1f} GB fit now"
    )
    if recommended is not None:
        print(f"recommended: {recommended.id} (squish pull {recommended.id})")
    print(f"default model: {default or store.EMBEDDED_NAME}\n")
    print("local models")
    print(
        table(
            ["NAME", "SIZE", "QUANT", "RAM (est.)", "LAST USED", "FROM"],
            [
                [
                    m.name + (" (embedded)" if m.embedded else ""),
                    size(m.size_bytes),
                    m.quantization,
                    size(m.ram_bytes),
                    ago(m.last_used),
                    SOURCES[m.source] + ("" if m.verified else ", verified on first load"),
                ]
                for m in local
            ],
        )
    )
    if partial:
        print("\npartial downloads (never loaded; pull again to resume, or squish rm)")
        print(
            table(
                ["NAME", "DOWNLOADED", "OF"],
                [[p.name, size(p.present_bytes), size(p.total_bytes) if p.total_bytes else "?"] for p in partial],
            )
        )
    print("\ncatalog" + ("" if args.all else " (4-bit; append -8bit, or -3bit for experimental 3-bit, to an id)"))
    print(
        table(
            ["ID", "REPO", "DOWNLOAD", "RAM (est.)", "FITS", ""],
            [
                [
                    r.id,
                    r.repo,
                    "-" if r.embedded else "~" + size(r.download_bytes),
                    "~" + size(r.ram_bytes),
                    r.fit,
                    ("experimental " if r.experimental else "") + ("downloaded" if r.downloaded else ""),
                ]
                for r in rows
            ],
        )
    )
    return 0


def describe_plan(plan, hw) -> list[str]:
    from ..models import hardware

    resumed = f", {size(plan.present_bytes)} already here from an interrupted pull" if plan.present_bytes else ""
    margin = plan.disk_needed_bytes - plan.remaining_bytes
    fit = hardware.fit(plan.ram.total_bytes, hw)
    lines = [
        f"{plan.name}: {plan.repo} @ {plan.revision[:12]}",
        f"download: {size(plan.total_bytes)} in {len(plan.files)} files{resumed}",
        (
            f"disk: needs {size(plan.remaining_bytes)} + {size(margin)} margin, "
            f"{size(plan.free_disk_bytes)} free: {'ok' if plan.disk_ok else 'NOT ENOUGH'}"
        ),
        f"RAM: {plan.ram.describe()}; {hw.memory_budget_gb:.1f} GB usable now: {fit}",
    ]
    if plan.experimental:
        lines.append("note: 3-bit builds are experimental: smaller, and answers are noticeably worse")
    return lines


class ProgressView:
    """A rich progress bar on a terminal; otherwise one line per file, so logs stay readable."""

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet, self.file = name, quiet, None
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[speed]}  ETA {task.fields[eta]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(f"pulling {name}", total=None, speed="", eta="")
            self.bar.start()

    def __call__(self, p) -> None:
        if self.bar is not None:
            eta = "-" if p.eta_s is None else time.strftime("%M:%S", time.gmtime(p.eta_s))
            self.bar.update(
                self.task,
                completed=p.done_bytes,
                total=p.total_bytes,
                description=f"{'verifying' if p.phase == 'verify' else 'pulling'} {self.name}",
                speed=f"{size(p.speed_bps)}/s",
                eta=eta,
            )
        elif not self.quiet and p.phase == "download" and p.file != self.file:
            self.file = p.file
            print(f"pulling {p.file} ({size(p.done_bytes)} of {size(p.total_bytes)} done)", file=sys.stderr)
        elif not self.quiet and p.phase == "verify":
            print(f"verifying {self.name} ({size(p.total_bytes)})", file=sys.stderr)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def pull(argv: list[str]) -> int:
    args = pull_parser().parse_args(argv)
    from ..models import hardware
    from ..models import pull as hub

    say = (lambda *a: None) if args.quiet or args.json else print
    display, _ = hub.identify(args.name)

    def verifying(path) -> None:
        say(f"{display} is in the Hugging Face cache ({path}): checking every file before it is used")

    ready = hub.ready_dir(args.name, before_verify=verifying)
    if ready is not None:
        say(f"{display} is already downloaded: {ready}")
        return 0
    plan = hub.fetch_plan(args.name)
    hw = hardware.detect()
    if args.json:
        print(json.dumps(plan.as_dict(hw)))
    for line in describe_plan(plan, hw):
        say(line)
    if not plan.disk_ok:
        hub.check_disk(plan)  # raises: refuse before a byte is written
    if hardware.fit(plan.ram.total_bytes, hw) != "yes":
        print(
            f"squish: warning: {display} needs about {size(plan.ram.total_bytes)} of memory and "
            f"{hw.memory_budget_gb:.1f} GB is usable now: it may not fit",
            file=sys.stderr,
        )
    if args.dry_run:
        return 0
    view = ProgressView(display, args.quiet)
    try:
        target = hub.download(plan, progress=view)
    except (KeyboardInterrupt, hub.Cancelled):
        view.stop()
        kept = hub.present_bytes(plan)
        print(f"squish: pull stopped; {size(kept)} kept, run `squish pull {args.name}` to resume", file=sys.stderr)
        return 130
    finally:
        view.stop()
    say(f"ready: {display} ({size(plan.total_bytes)}) in {target}")
    say(f'try: squish -p "Hello" --model {display}')
    return 0


def same_model(a: str, b: str) -> bool:
    from ..errors import SquishError
    from ..models import pull as hub

    try:
        return hub.identify(a)[1].lower() == hub.identify(b)[1].lower()
    except SquishError:
        return a == b


def confirm(question: str, yes: bool) -> bool:
    """`--yes`, or the user's y on a terminal; no without a terminal to ask on."""
    if yes:
        return True
    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def rm(argv: list[str]) -> int:
    args = rm_parser().parse_args(argv)
    from ..errors import ModelNotFound
    from ..models import settings, store

    code = 0
    for name in args.names:
        try:
            removal = store.removal(name)
        except ModelNotFound as exc:
            print(f"squish: error: {exc}", file=sys.stderr)
            code = 1
            continue
        others = False
        if removal.others:
            print(
                f"{name}: the Hugging Face cache holds {len(removal.others)} revision(s) that another tool put "
                f"there (or that hold files squish did not fetch): {', '.join(c[:12] for c in removal.others)}"
            )
            others = args.yes or (not args.dry_run and confirm("delete them too?", args.yes))
            if not others:
                print("  they stay" + ("" if sys.stdin.isatty() else " (squish rm --yes deletes them)"))
        if not removal.deletes(others):
            print(f"squish: error: nothing of {name} deleted", file=sys.stderr)
            code = 1
            continue
        print(f"{'would remove' if args.dry_run else 'removing'} {name}:")
        for line in removal.describe(others):
            print(f"  {line}")
        if args.dry_run:
            continue
        removal.execute(others)
        print(f"removed {name}")
        default = settings.default_model()
        if default is not None and same_model(default, name) and not still_here(name):
            settings.set_default_model(None)
            print(f"the default model is {store.EMBEDDED_NAME} again")
    return code


def still_here(name: str) -> bool:
    from ..errors import SquishError
    from ..models import store

    try:
        store.resolve(name)
    except SquishError:
        return False
    return True
