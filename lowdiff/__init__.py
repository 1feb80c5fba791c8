"""lowdiff: cascaded multi-resolution diffusion with one unified network (LowDiff)."""
from .config import PRESETS, NetworkConfig, Preset, StageConfig, TrainConfig, get_preset
from .pipeline import Pipeline, load

__version__ = "0.1.0"
__all__ = ["PRESETS", "NetworkConfig", "Pipeline", "Preset", "StageConfig", "TrainConfig", "get_preset", "load"]
