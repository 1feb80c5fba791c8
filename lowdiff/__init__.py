"""lowdiff: cascaded multi-resolution diffusion with one unified network (LowDiff)."""
from .config import Preset, StageConfig, StagePlan, TrainConfig
from .nn import DiTConfig, UNetConfig
from .pipeline import Pipeline, load
from .presets import PRESETS, get_preset

__version__ = "0.1.0"
__all__ = ["PRESETS", "DiTConfig", "Pipeline", "Preset", "StageConfig", "StagePlan", "TrainConfig", "UNetConfig",
           "get_preset", "load"]
