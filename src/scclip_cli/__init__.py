"""scclip: training-free open-vocabulary segmentation with Self-Calibrated CLIP (SC-CLIP).

The public API is importable from here without importing torch until it is used::

    from scclip_cli import Segmenter
    seg = Segmenter.load(vocab="vocab/everyday.txt")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CalibrationConfig",
    "MethodConfig",
    "ModelOptions",
    "ProtocolConfig",
    "RayOptions",
    "ScclipError",
    "Segmentation",
    "Segmenter",
    "__version__",
    "evaluate",
    "segment",
]

if TYPE_CHECKING:
    from scclip_cli.config import CalibrationConfig, MethodConfig, ProtocolConfig
    from scclip_cli.errors import ScclipError
    from scclip_cli.predict.model_options import ModelOptions
    from scclip_cli.predict.segmenter import Segmentation, Segmenter
    from scclip_cli.runs.evaluate import evaluate
    from scclip_cli.runs.ray_engine import RayOptions
    from scclip_cli.runs.segment import segment

_LAZY = {
    "CalibrationConfig": "scclip_cli.config",
    "MethodConfig": "scclip_cli.config",
    "ProtocolConfig": "scclip_cli.config",
    "ModelOptions": "scclip_cli.predict.model_options",
    "RayOptions": "scclip_cli.runs.ray_engine",
    "ScclipError": "scclip_cli.errors",
    "Segmentation": "scclip_cli.predict.segmenter",
    "Segmenter": "scclip_cli.predict.segmenter",
    "segment": "scclip_cli.runs.segment",
    "evaluate": "scclip_cli.runs.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scclip_cli' has no attribute {name!r}")
