"""`lowdiff presets` and `lowdiff info PRESET`."""
from __future__ import annotations

import json
from pathlib import Path

from ..presets import PRESETS


def register(sub) -> None:
    s = sub.add_parser("presets", help="list the named presets (paper configs and small CPU configs)")
    s.set_defaults(func=run_presets)
    s = sub.add_parser("info", help="parameter counts, stage plan, NFE per stage, effective NFE and training "
                       "settings of a preset")
    s.add_argument("preset", help="preset name (see `lowdiff presets`), a config.json file, or a model (a model "
                   "directory or bundled:NAME: also lists its named plans with the figures they were measured at)")
    s.add_argument("--json", action="store_true", help="print machine-readable JSON")
    s.set_defaults(func=run_info)


def run_presets(args) -> None:
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.description}")


def run_info(args) -> None:
    from ..info import describe, describe_model, format_info
    is_model = args.preset.startswith("bundled:") or Path(args.preset).is_dir()
    info = describe_model(args.preset) if is_model else describe(args.preset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
