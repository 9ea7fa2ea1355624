"""What the machine allows, checked before the work that needs it: memory for an input size (estimated before
anything is allocated) and a network for pretrained weights (a failed download becomes one line)."""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import ExitsError

__all__ = ["available_memory", "check_input_size", "translate_download_errors"]

_FLOAT_BYTES = 4


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_input_size(input_size: Sequence[int], *, batch: int = 2) -> None:
    """ExitsError in one line, before anything is allocated, when a batch of ``batch`` images at ``input_size``
    cannot fit: its input and one activation of the same size (a lower bound of what the attach-time probe
    holds) against the memory available now."""
    dims = [int(v) for v in input_size]
    if not dims or min(dims) < 1:
        raise ExitsError(f"input size {tuple(dims)}: every dimension must be >= 1")
    need = 2 * batch * math.prod(dims) * _FLOAT_BYTES
    avail = available_memory()
    if avail is not None and need > avail:
        raise ExitsError(f"input size {' x '.join(map(str, dims[1:]))}: a batch of {batch} needs at least "
                         f"{need / 1e9:,.1f} GB (its input and a first activation), more than the "
                         f"{avail / 1e9:,.1f} GB "
                         "of memory available; choose a smaller input size")


def _is_download_error(exc: BaseException) -> bool:
    """An error of fetching weights (no network, a hub that cannot be reached), not of building the model."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    return any(c.__module__.split(".")[0] in ("huggingface_hub", "requests", "urllib3", "httpx", "urllib")
               for c in type(exc).__mro__)


@contextlib.contextmanager
def translate_download_errors(name: str) -> Iterator[None]:
    """Around fetching ``name``'s pretrained weights: a download that fails (no network) is one ExitsError line;
    the hub's own log line per failed request is held back. Any other error passes unchanged."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    except Exception as exc:  # noqa: BLE001 -- only download failures are translated, the rest re-raised
        if not _is_download_error(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:120]
        raise ExitsError(f"{name}: pretrained weights could not be fetched ({type(exc).__name__}: {reason}); "
                         "without a network, run once where there is one so timm caches them, or load a weights "
                         "file instead (--backbone-weights FILE where the command has it)") from None
    finally:
        hub_log.setLevel(level)
