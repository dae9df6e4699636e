"""How bytes come from the hub for a pull: progress, cancel, retries and one-line errors.

Everything here wraps huggingface_hub's own calls: `progress_bar` is the `tqdm_class` they report
to (and the way to stop them), `again_on_5xx` the retry they lack for a file's body, and
`hub_errors` / `transfer_errors` turn their exceptions into squish's one-line errors.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import EngineFailure, ModelNotFound, SquishError, UserError

PROGRESS_INTERVAL_S = 0.1
SPEED_WINDOW_S = 5.0
RETRIES = 3  # answers with a 5xx status in a row, per file, before giving up (each attempt resumes)
RETRY_WAIT_S = 1.0


class Cancelled(SquishError):
    """The user stopped the download; what arrived is kept for the next pull."""

    exit_code = 130


@dataclass(frozen=True)
class PullProgress:
    phase: str  # download, verify or done
    file: str
    done_bytes: int
    total_bytes: int
    speed_bps: float
    eta_s: float | None


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


@contextmanager
def hub_errors(name: str, endpoint: str):
    """Turn huggingface_hub, transport and file-system errors into squish errors with one clear line."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except SquishError:
        raise
    except errors.GatedRepoError:
        raise UserError(f"{name} is gated on the hub: accept its license there and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise ModelNotFound(f"{name} was not found on the hub at {endpoint} (or it is private: set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise ModelNotFound(f"{name}: revision not found on the hub") from None
    except errors.OfflineModeIsEnabled:
        raise EngineFailure(f"offline (HF_HUB_OFFLINE is set): cannot download {name}") from None
    except errors.HfHubHTTPError as exc:
        raise EngineFailure(f"the hub at {endpoint} answered HTTP {status_of(exc) or '?'} for {name}") from None
    except (httpx2.HTTPError, ConnectionError) as exc:
        raise EngineFailure(f"cannot reach the hub at {endpoint}: {reason(exc)}") from None
    except OSError as exc:
        raise EngineFailure(f"download of {name} failed: {reason(exc)}") from None


@contextmanager
def transfer_errors(name: str, filename: str):
    """A file that the network or the hub fails to deliver: say where, and that pulling again goes on."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except (httpx2.TransportError, errors.LocalEntryNotFoundError, errors.HfHubHTTPError) as exc:
        if isinstance(exc, errors.HfHubHTTPError) and (status_of(exc) or 500) < 500:
            raise
        why = f"HTTP {status_of(exc)}" if isinstance(exc, errors.HfHubHTTPError) else reason(exc)
        raise EngineFailure(
            f"download of {name} failed at {filename}: {why} (run `squish pull {name}` again to resume)"
        ) from None


class Tracker:
    """Bytes done across the whole pull, the speed over the last seconds, and throttled reports."""

    def __init__(self, total: int, done: int, report: Callable[[PullProgress], None] | None):
        self.total, self.done, self.report = total, done, report
        self.samples: deque = deque([(time.monotonic(), 0)])
        self.session_bytes = 0
        self.last_report = 0.0
        self.file = None

    def advance(self, nbytes: int, filename: str, force: bool = False) -> None:
        self.done += nbytes
        self.session_bytes += nbytes
        now = time.monotonic()
        self.samples.append((now, self.session_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
            self.samples.popleft()
        force = force or filename != self.file
        self.file = filename
        if self.report is not None and (force or now - self.last_report >= PROGRESS_INTERVAL_S):
            self.last_report = now
            self.report(self.progress("download", filename))

    def speed(self) -> float:
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def progress(self, phase: str, filename: str) -> PullProgress:
        speed = self.speed()
        remaining = self.total - self.done
        eta = remaining / speed if speed > 0 else (0.0 if remaining <= 0 else None)
        return PullProgress(phase, filename, self.done, self.total, speed, eta)


def progress_bar(tracker: Tracker, filename: str, cancel: threading.Event | None, name: str, resumed: int = 0):
    """A `tqdm_class` for huggingface_hub's downloads: it counts the bytes into `tracker` and raises
    `Cancelled` on the first update after `cancel` is set (the chunk in hand is not written).

    huggingface_hub reads the body in 10 MB chunks and updates after each, so a cancel takes effect
    within one chunk. `resumed` is what the file's partial held when the request went out: a hub
    that ignores the Range starts the bar at 0, and the bytes dropped are counted off.
    """

    class Bar:
        def __init__(self, *args, initial: int = 0, **kwargs) -> None:
            tracker.advance(initial - resumed, filename, force=True)

        def update(self, n: float | None = 1) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"download of {name} stopped; pull it again to resume")
            tracker.advance(int(n or 0), filename)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def close(self) -> None:
            pass

        def refresh(self) -> None:
            pass

        def set_postfix_str(self, *args, **kwargs) -> None:
            pass

    return Bar


def again_on_5xx(call: Callable[[], object]):
    """Call again when the hub answers 5xx (huggingface_hub retries those only for its metadata calls);
    each call resumes from the bytes already there."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, RETRIES + 1):
        try:
            return call()
        except HfHubHTTPError as exc:
            if (status_of(exc) or 0) < 500 or attempt == RETRIES:
                raise
            time.sleep(RETRY_WAIT_S * attempt)
