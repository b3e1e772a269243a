"""Sample GPU utilisation, memory and power with nvidia-ml-py while timed steps run."""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np


def _summary(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)  # (samples,)
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max()),
            "n": int(arr.size)}


class GpuSampler:
    """Background sampler of one GPU (NVML index ``index``) every ``interval_s`` seconds.

    ``available`` is False (and ``reason`` says why) when nvidia-ml-py or a GPU is missing;
    ``start``/``stop`` are then no-ops and ``summary()`` returns None.
    """

    def __init__(self, index: int = 0, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.reason: Optional[str] = None
        self._samples: list[tuple[float, float, float]] = []  # (util %, used bytes, power W)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        try:
            import pynvml  # from nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # ImportError, NVMLError (no driver / no GPU)
            self._nvml = None
            self.reason = f"unavailable: {type(exc).__name__}: {exc}".strip()

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def _run(self):
        nv, h = self._nvml, self._handle
        while not self._stop.is_set():
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h).gpu
                used = nv.nvmlDeviceGetMemoryInfo(h).used
                power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0  # mW -> W
                self._samples.append((float(util), float(used), float(power)))
            except Exception as exc:
                self.reason = f"sampling stopped: {exc}"
                return
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self.available and self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._stop.clear()

    def take(self) -> Optional[dict]:
        """Summary of the samples since the last take (None when there are none)."""
        samples, self._samples = self._samples, []
        if not samples:
            return None
        util, used, power = zip(*samples)
        return {"util_pct": _summary(list(util)), "mem_bytes": _summary(list(used)),
                "power_w": _summary(list(power))}
