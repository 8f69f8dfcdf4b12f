"""GPU figures (ragtrail.tracing._gpu).

CI has no GPU, so most tests here run the sampler against a scripted stand-in for the ``pynvml`` module
(NVML is the hardware's driver library: there is nothing real to call on a CPU machine). The stand-in
only answers utilisation/memory queries with scripted numbers; the sampler thread, the windowing, the
aggregation and the span attributes are the real code. ``test_real_cuda_*`` runs on a machine with a GPU.
"""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from ragtrail import semconv
from ragtrail.tracing import _gpu


class _ScriptedNvml(types.ModuleType):
    """Answers NVML queries for one GPU with scripted utilisation and memory; counts the calls."""

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.util = 40
        self.used = 1_000
        self.calls = 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        pass

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:  # noqa: N802
        return f"h{i}"

    def nvmlDeviceGetHandleByUUID(self, u: str) -> str:  # noqa: N802
        return f"u{u}"

    def nvmlDeviceGetName(self, h: str) -> str:  # noqa: N802
        return "NVIDIA H200"

    def nvmlDeviceGetUtilizationRates(self, h: str):  # type: ignore[no-untyped-def]  # noqa: N802
        self.calls += 1
        return types.SimpleNamespace(gpu=self.util, memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: str):  # type: ignore[no-untyped-def]  # noqa: N802
        return types.SimpleNamespace(used=self.used, total=10_000, free=10_000 - self.used)


def _reset_module_state() -> None:
    _gpu._nvml_mod = None
    _gpu._nvml_state = None
    _gpu._handles.clear()
    _gpu._names.clear()
    _gpu._totals.clear()


@pytest.fixture
def nvml(monkeypatch):  # type: ignore[no-untyped-def]
    fake = _ScriptedNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _reset_module_state()
    old = _gpu.sampler_settings()
    _gpu.sampler_settings(interval_s=0.01, idle_stop_s=0.05)
    yield fake
    _gpu.sampler_settings(*old)
    _wait_sampler_stopped()
    _reset_module_state()


def _wait_sampler_stopped(timeout: float = 5.0) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        th = _gpu._sampler.thread
        if th is None or not th.is_alive():
            return
        time.sleep(0.01)


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ragtrail-gpu-sampler"]


def test_cuda_indices_parses_devices_and_maps() -> None:
    assert _gpu.cuda_indices("cpu") is None
    assert _gpu.cuda_indices(None) is None
    assert _gpu.cuda_indices("cuda:1") == [1]
    assert _gpu.cuda_indices(2) == [2]
    assert _gpu.cuda_indices({"model.embed": 0, "model.layers.0": "cuda:1", "lm_head": "cpu", "x": 1}) == [0, 1]
    torch = pytest.importorskip("torch")
    assert _gpu.cuda_indices(torch.device("cpu")) is None
    assert _gpu.cuda_indices(torch.device("cuda", 3)) == [3]


def test_no_gpu_means_no_window_and_no_thread(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On this machine NVML is not loadable (or not installed): begin() gives None, no sampler starts."""
    _reset_module_state()
    monkeypatch.setenv("RAGTRAIL_NVML", "0")
    try:
        assert _gpu.begin(None) is None
        assert _gpu.begin([0], torch_memory=True) is None or _gpu._torch_cuda() is not None
        assert not _gpu.nvml_available()
        assert _sampler_threads() == [] or all(not t.is_alive() for t in _sampler_threads())
    finally:
        _reset_module_state()


def test_sampler_starts_lazily_aggregates_inside_the_window_and_stops_when_idle(nvml) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import TracerProvider

    assert _gpu._sampler.thread is None or not _gpu._sampler.thread.is_alive()
    before = nvml.calls
    time.sleep(0.05)
    assert nvml.calls == before  # nothing samples until a GPU span begins

    span = TracerProvider().get_tracer("t").start_span("gen")
    window = _gpu.begin([0], torch_memory=False)
    assert window is not None
    assert _gpu._sampler.thread is not None and _gpu._sampler.thread.is_alive()
    time.sleep(0.08)
    nvml.util, nvml.used = 90, 5_000
    time.sleep(0.08)
    attrs = window.finish(span)
    span.end()

    assert attrs[semconv.GPU_TYPE] == "NVIDIA H200"
    assert attrs[semconv.GPU_COUNT] == 1
    assert attrs[semconv.GPU_SAMPLES] >= 4
    assert 40 < attrs[semconv.GPU_UTILIZATION] < 90  # mean of 40s and 90s
    assert attrs[semconv.GPU_UTILIZATION_MAX] == 90
    assert attrs[semconv.GPU_MEMORY_USED_BYTES] == 5_000  # the most seen during the window
    assert attrs[semconv.GPU_MEMORY_TOTAL_BYTES] == 10_000
    assert span.attributes[semconv.GPU_UTILIZATION_MAX] == 90

    _wait_sampler_stopped()
    assert _gpu._sampler.thread is None  # stopped itself once no GPU span was open
    calls = nvml.calls
    time.sleep(0.05)
    assert nvml.calls == calls


def test_short_window_gets_one_direct_read(nvml) -> None:  # type: ignore[no-untyped-def]
    _gpu.sampler_settings(interval_s=10.0)
    window = _gpu.begin([0], torch_memory=False)
    assert window is not None
    time.sleep(0.02)  # the thread's first sample may or may not have landed inside the window
    nvml.util = 77
    attrs = window.finish()
    assert attrs[semconv.GPU_SAMPLES] >= 1
    assert semconv.GPU_UTILIZATION in attrs


def test_cuda_visible_devices_picks_the_physical_gpu(nvml, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert _gpu._handle(1) == "h1"
    assert _gpu._handle(0) == "h3"
    _gpu._handles.clear()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert _gpu._handle(0) == "uGPU-abc"


def test_sampler_interval_must_be_positive() -> None:
    from ragtrail import ConfigError

    with pytest.raises(ConfigError):
        _gpu.sampler_settings(interval_s=0)


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_real_cuda_window_reads_nvml_and_torch_peak() -> None:
    import torch

    _reset_module_state()
    x = torch.empty(1, device="cuda:0")  # CUDA initialised in this process
    window = _gpu.begin([0], torch_memory=True, reset_peak=True)
    assert window is not None
    y = torch.randn(4096, 4096, device="cuda:0") @ torch.randn(4096, 4096, device="cuda:0")
    torch.cuda.synchronize()
    attrs = window.finish()
    del x, y
    assert attrs[semconv.GPU_TYPE] == torch.cuda.get_device_name(0)
    assert attrs[semconv.GPU_PEAK_MEMORY_BYTES] >= 3 * 4096 * 4096 * 4
    if _gpu.nvml_available():
        assert 0 <= attrs[semconv.GPU_UTILIZATION] <= 100
        assert attrs[semconv.GPU_MEMORY_USED_BYTES] > 0
