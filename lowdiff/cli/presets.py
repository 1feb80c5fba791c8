"""`lowdiff presets` and `lowdiff info PRESET`."""
from __future__ import annotations

import json

from ..presets import PRESETS


def register(sub) -> None:
    s = sub.add_parser("presets", help="list the named presets (paper configs and small CPU configs)")
    s.set_defaults(func=run_presets)
    s = sub.add_parser("info", help="parameter counts, stage plan, NFE per stage, effective NFE and training "
                       "settings of a preset")
    s.add_argument("preset", help="preset name (see `lowdiff presets`) or a config.json file")
    s.add_argument("--json", action="store_true", help="print machine-readable JSON")
    s.set_defaults(func=run_info)


def run_presets(args) -> None:
    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        print(f"{name:<{width}}  {p.description}")


def run_info(args) -> None:
    from ..info import describe, format_info
    info = describe(args.preset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
