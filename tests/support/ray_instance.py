"""One private Ray instance per test module that needs Ray (never a cluster running here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def private_ray_instance() -> Iterator[Any]:
    """Start a 2-CPU, GPU-less Ray instance without dashboard; yield the ``ray`` module; shut it
    down. Skips when Ray is not installed. Use it as a module-scoped fixture."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            logging_level="ERROR",
            log_to_driver=False,
        )
        try:
            yield ray
        finally:
            ray.shutdown()
