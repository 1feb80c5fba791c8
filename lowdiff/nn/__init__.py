"""Networks: `UnifiedUNet` (SongUNet / DDPM++) and `UnifiedDiT` (LightningDiT-style), each
with its own config dataclass. They take plain documented hyper-parameters and import no
other part of lowdiff but its errors and number checks."""
from .dit import DiTConfig, UnifiedDiT
from .unet import UNetConfig, UnifiedUNet

NETWORKS = {UNetConfig.arch: (UNetConfig, UnifiedUNet), DiTConfig.arch: (DiTConfig, UnifiedDiT)}
NetworkConfig = UNetConfig | DiTConfig


def build_network(cfg: NetworkConfig) -> UnifiedUNet | UnifiedDiT:
    """The network a config describes."""
    return NETWORKS[cfg.arch][1](cfg)


__all__ = ["NETWORKS", "DiTConfig", "NetworkConfig", "UNetConfig", "UnifiedDiT", "UnifiedUNet", "build_network"]
