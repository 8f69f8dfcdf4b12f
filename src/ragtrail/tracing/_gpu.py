"""GPU figures for LLM and embedding spans: GPU type, utilisation and memory, sampled off the hot path.

How it stays off the hot path:

* NVML (``nvidia-ml-py``, imported as ``pynvml``) is read by one background daemon thread, started
  lazily when the first GPU span begins and stopped after ``idle_stop_s`` without an open GPU span. It
  reads utilisation (about 1-2 µs) and memory in use (about 6 µs) every ``interval_s`` (default 0.5 s;
  NVML's utilisation counter itself averages over 1/6 s to 1 s) into a small ring buffer, and sleeps
  without waking while no GPU span is open. A span's figures are the samples that fall inside it,
  computed once, at its end. A span shorter than one interval gets a single direct read at its end.
  Measured on an H200 (2026-11-29): each wake-up of a Python thread costs the generating thread a GIL
  hand-off, so the interval, not the NVML calls, sets the sampler's cost; at 0.1 s it was about 0.35%
  of a CPU-bound ``generate`` loop, hence 0.5 s.
* ``torch.cuda.max_memory_allocated`` (tens of µs) is read at span start and end only, never per token.
* On a machine without a GPU (or a span whose device is the CPU) :func:`begin` returns ``None`` and no GPU
  attribute is written: absent, never zero.

Connectors use it like this::

    window = _gpu.begin(_gpu.cuda_indices(model.device), torch_memory=True)
    ...                                   # the model call
    if window is not None:
        window.finish(span)               # sets ragtrail.gpu.* attributes; never raises

Nothing here imports torch: torch figures are read only when the caller's process already imported it.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger

__all__ = [
    "GpuWindow",
    "begin",
    "cuda_indices",
    "device_name",
    "nvml_available",
    "sampler_settings",
]

_lock = threading.Lock()
_nvml_mod: Any = None
_nvml_state: bool | None = None  # None: not tried yet; False: unavailable; True: initialised
_handles: dict[int, Any] = {}
_names: dict[int, str | None] = {}
_totals: dict[int, int | None] = {}

_INTERVAL_S = 0.5
_IDLE_STOP_S = 30.0
_BUFFER = 4096  # samples kept per device: about 34 minutes at 0.5 s; older ones are dropped


def sampler_settings(interval_s: float | None = None, idle_stop_s: float | None = None) -> tuple[float, float]:
    """Read (and optionally change) the sampling interval and the idle time after which the sampler stops."""
    global _INTERVAL_S, _IDLE_STOP_S
    if interval_s is not None:
        if interval_s <= 0:
            from ragtrail._exceptions import ConfigError

            raise ConfigError(f"GPU sampling interval must be > 0 seconds, got {interval_s!r}")
        _INTERVAL_S = float(interval_s)
    if idle_stop_s is not None:
        _IDLE_STOP_S = max(0.0, float(idle_stop_s))
    return _INTERVAL_S, _IDLE_STOP_S


# --------------------------------------------------------------------------------------------- NVML
def _nvml() -> Any:
    """The initialised pynvml module, or None (not installed, no driver, init failed). Tried once."""
    global _nvml_mod, _nvml_state
    if _nvml_state is not None:
        return _nvml_mod if _nvml_state else None
    with _lock:
        if _nvml_state is not None:
            return _nvml_mod if _nvml_state else None
        if os.environ.get("RAGTRAIL_NVML", "1") == "0":
            _nvml_state = False
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_mod = pynvml
            _nvml_state = True
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
            logger.debug("ragtrail: NVML unavailable (%s); GPU utilisation is not recorded", exc)
            _nvml_state = False
    return _nvml_mod if _nvml_state else None


def nvml_available() -> bool:
    """Whether NVML could be initialised in this process."""
    return _nvml() is not None


def _torch_cuda() -> Any:
    """``torch.cuda`` when torch is already imported and CUDA is initialised here, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        return cuda if cuda.is_available() and cuda.is_initialized() else None
    except Exception:
        return None


def _visible_entry(index: int) -> str | None:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    items = [x.strip() for x in env.split(",") if x.strip()]
    return items[index] if 0 <= index < len(items) else None


def _handle(index: int) -> Any:
    """NVML handle of the CUDA device ``index`` (as this process numbers it), honouring CUDA_VISIBLE_DEVICES."""
    if index in _handles:
        return _handles[index]
    nv = _nvml()
    handle = None
    if nv is not None:
        try:
            cuda = _torch_cuda()
            uuid = None
            if cuda is not None:
                uuid = getattr(cuda.get_device_properties(index), "uuid", None)
            if uuid is not None:
                text = str(uuid)
                handle = nv.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else "GPU-" + text)
            else:
                entry = _visible_entry(index)
                if entry is not None and not entry.isdigit():
                    handle = nv.nvmlDeviceGetHandleByUUID(entry)
                else:
                    handle = nv.nvmlDeviceGetHandleByIndex(int(entry) if entry is not None else index)
        except Exception as exc:
            logger.debug("ragtrail: no NVML handle for cuda:%s (%s)", index, exc)
            handle = None
    _handles[index] = handle
    return handle


def device_name(index: int = 0) -> str | None:
    """Model name of CUDA device ``index`` (e.g. ``NVIDIA H200``), from NVML or torch; None when unknown."""
    if index in _names:
        return _names[index]
    name = None
    h = _handle(index)
    if h is not None:
        try:
            raw = _nvml_mod.nvmlDeviceGetName(h)
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
        except Exception:
            name = None
    if name is None:
        cuda = _torch_cuda()
        if cuda is not None:
            try:
                name = str(cuda.get_device_name(index))
            except Exception:
                name = None
    _names[index] = name
    return name


def _total_memory(index: int) -> int | None:
    if index in _totals:
        return _totals[index]
    total = None
    h = _handle(index)
    if h is not None:
        try:
            total = int(_nvml_mod.nvmlDeviceGetMemoryInfo(h).total)
        except Exception:
            total = None
    _totals[index] = total
    return total


def _read(index: int) -> tuple[float | None, int | None]:
    """One direct NVML read: (utilisation %, memory used bytes)."""
    h = _handle(index)
    if h is None:
        return None, None
    util = mem = None
    try:
        util = float(_nvml_mod.nvmlDeviceGetUtilizationRates(h).gpu)
    except Exception:
        util = None
    try:
        mem = int(_nvml_mod.nvmlDeviceGetMemoryInfo(h).used)
    except Exception:
        mem = None
    return util, mem


# ---------------------------------------------------------------------------------------- sampler
class _Sampler:
    """One daemon thread reading NVML for the devices of open GPU spans; stops itself when idle."""

    def __init__(self) -> None:
        self.buffers: dict[int, collections.deque[tuple[float, float | None, int | None]]] = {}
        self.open: dict[int, int] = {}  # device index -> open windows
        self.last_open = time.monotonic()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.errors = 0

    def acquire(self, indices: Iterable[int]) -> None:
        with _lock:
            was_idle = not self.open
            for i in indices:
                self.open[i] = self.open.get(i, 0) + 1
                self.buffers.setdefault(i, collections.deque(maxlen=_BUFFER))
            self.last_open = time.monotonic()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="ragtrail-gpu-sampler", daemon=True)
                self.thread.start()
            elif was_idle:
                self.wake.set()  # the sleeping thread takes a first sample now

    def release(self, indices: Iterable[int]) -> None:
        with _lock:
            for i in indices:
                n = self.open.get(i, 0) - 1
                if n <= 0:
                    self.open.pop(i, None)
                else:
                    self.open[i] = n
            self.last_open = time.monotonic()

    def samples(self, index: int, t0: float, t1: float) -> list[tuple[float, float | None, int | None]]:
        with _lock:
            buf = self.buffers.get(index)
            if not buf:
                return []
            return [s for s in buf if t0 <= s[0] <= t1]

    def _run(self) -> None:
        while True:
            with _lock:
                devices = list(self.open)
                timeout = _INTERVAL_S
                if not devices:
                    idle_for = time.monotonic() - self.last_open
                    if idle_for >= _IDLE_STOP_S:
                        self.thread = None
                        return
                    timeout = _IDLE_STOP_S - idle_for  # sleep through idle time: no wake-ups
            for i in devices:
                try:
                    util, mem = _read(i)
                    now = time.monotonic()
                    with _lock:
                        buf = self.buffers.get(i)
                        if buf is not None:
                            buf.append((now, util, mem))
                except Exception:
                    self.errors += 1
                    if self.errors == 1:
                        logger.warning("ragtrail: GPU sampling failed; GPU figures may be missing", exc_info=True)
            self.wake.wait(timeout)
            self.wake.clear()


_sampler = _Sampler()


# ----------------------------------------------------------------------------------------- windows
class GpuWindow:
    """The GPU figures of one span, from :func:`begin` to :meth:`finish`."""

    __slots__ = ("_done", "_peak0", "_reset", "_t0", "_torch", "indices")

    def __init__(self, indices: list[int], torch_memory: bool, reset_peak: bool) -> None:
        self.indices = indices
        self._t0 = time.monotonic()
        self._torch = None
        self._peak0: dict[int, int] = {}
        self._reset = False
        self._done = False
        if torch_memory:
            cuda = _torch_cuda()
            if cuda is not None:
                self._torch = cuda
                try:
                    for i in indices:
                        if reset_peak:
                            cuda.reset_peak_memory_stats(i)
                        else:
                            self._peak0[i] = int(cuda.max_memory_allocated(i))
                    self._reset = reset_peak
                except Exception:
                    logger.debug("ragtrail: torch memory stats unavailable", exc_info=True)
                    self._torch = None
        if _nvml() is not None:
            _sampler.acquire(indices)

    def figures(self) -> dict[str, Any]:
        """The GPU attributes for the window so far (type, count, utilisation, memory)."""
        attrs: dict[str, Any] = {}
        t1 = time.monotonic()
        name = device_name(self.indices[0]) if self.indices else None
        if name:
            attrs[semconv.GPU_TYPE] = name
        attrs[semconv.GPU_COUNT] = len(self.indices)
        if _nvml() is not None:
            utils: list[float] = []
            mem_by_dev: list[int] = []
            n = 0
            for i in self.indices:
                samples = _sampler.samples(i, self._t0, t1)
                if not samples:
                    u, m = _read(i)
                    samples = [(t1, u, m)]
                n += len(samples)
                utils.extend(s[1] for s in samples if s[1] is not None)
                mems = [s[2] for s in samples if s[2] is not None]
                if mems:
                    mem_by_dev.append(max(mems))
            if utils:
                attrs[semconv.GPU_UTILIZATION] = sum(utils) / len(utils)
                attrs[semconv.GPU_UTILIZATION_MAX] = max(utils)
            if mem_by_dev:
                attrs[semconv.GPU_MEMORY_USED_BYTES] = sum(mem_by_dev)
            totals = [_total_memory(i) for i in self.indices]
            if totals and all(t is not None for t in totals):
                attrs[semconv.GPU_MEMORY_TOTAL_BYTES] = sum(t for t in totals if t is not None)
            attrs[semconv.GPU_SAMPLES] = n
        if self._torch is not None:
            try:
                peaks = [int(self._torch.max_memory_allocated(i)) for i in self.indices]
                if self._reset or any(p > self._peak0.get(i, 0) for i, p in zip(self.indices, peaks, strict=False)):
                    # exact only when the counter was reset at begin() or this call raised the process peak
                    attrs[semconv.GPU_PEAK_MEMORY_BYTES] = sum(peaks)
            except Exception:
                logger.debug("ragtrail: torch peak memory unavailable", exc_info=True)
        return attrs

    def finish(self, span: Span | None = None) -> dict[str, Any]:
        """End the window: set the figures on ``span`` (if given and recording) and return them. Never raises."""
        attrs: dict[str, Any] = {}
        try:
            attrs = self.figures()
            if span is not None and span.is_recording():
                span.set_attributes(attrs)
        except Exception:
            logger.debug("ragtrail: could not record GPU figures", exc_info=True)
        finally:
            if not self._done:
                self._done = True
                if _nvml() is not None:
                    _sampler.release(self.indices)
        return attrs


def cuda_indices(device: Any) -> list[int] | None:
    """CUDA device indices for a torch device, ``"cuda:1"``, an int, a list of those or a HF
    ``hf_device_map``; None when none of them is a CUDA device (CPU, MPS, meta…)."""
    items: Sequence[Any]
    if isinstance(device, dict):
        items = list(device.values())
    elif isinstance(device, (list, tuple, set)):
        items = list(device)
    else:
        items = [device]
    out: list[int] = []
    for d in items:
        idx: int | None = None
        if isinstance(d, bool):
            continue
        if isinstance(d, int):
            idx = d
        else:
            typ = getattr(d, "type", None)
            if typ is not None:  # torch.device
                if typ == "cuda":
                    idx = d.index if d.index is not None else _current_cuda_index()
            elif isinstance(d, str):
                if d == "cuda":
                    idx = _current_cuda_index()
                elif d.startswith("cuda:") and d[5:].isdigit():
                    idx = int(d[5:])
                elif d.isdigit():
                    idx = int(d)
        if idx is not None and idx not in out:
            out.append(idx)
    return out or None


def _current_cuda_index() -> int:
    cuda = _torch_cuda()
    if cuda is not None:
        try:
            return int(cuda.current_device())
        except Exception:
            return 0
    return 0


def begin(indices: Sequence[int] | None, *, torch_memory: bool = True, reset_peak: bool = False) -> GpuWindow | None:
    """Open a window over CUDA devices ``indices``; None (no figures at all) when there is no GPU to read.

    Args:
        indices: CUDA device indices as this process numbers them (see :func:`cuda_indices`).
        torch_memory: read torch's peak allocated memory at the window's start and end (only when this
            process has CUDA initialised; an engine in other processes, like vLLM, passes False).
        reset_peak: reset torch's peak counter at the start so that the peak is the window's own;
            otherwise the peak is recorded only when the window raised the process-wide peak.
    Never raises.
    """
    try:
        if not indices:
            return None
        if _nvml() is None and (not torch_memory or _torch_cuda() is None):
            # nothing to read: still a GPU window when the type is known (from torch), else none at all
            if device_name(indices[0]) is None:
                return None
        return GpuWindow(list(indices), torch_memory, reset_peak)
    except Exception:
        logger.debug("ragtrail: could not open a GPU window", exc_info=True)
        return None
