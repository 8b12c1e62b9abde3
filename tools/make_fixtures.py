#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures that the Rust tests compare against.

Development tool, run by hand (never in CI; resnorm has no Python runtime dependency):

    pip install torch safetensors
    python3 tools/make_fixtures.py            # every fixture
    python3 tools/make_fixtures.py norms      # only tools/fixtures/norms.py

Each module in tools/fixtures/ (but common.py) has a `make(out_dir)` that writes one or more
`.safetensors` files into crates/resnorm/tests/fixtures/. The files are committed; the Rust
tests read them with crates/resnorm/tests/common/mod.rs.
"""
import importlib
import pathlib
import pkgutil
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "resnorm" / "tests" / "fixtures"


def main() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    wanted = set(sys.argv[1:])
    names = sorted(m.name for m in pkgutil.iter_modules([str(ROOT / "tools" / "fixtures")]))
    names = [n for n in names if n != "common" and (not wanted or n in wanted)]
    if wanted - set(names):
        sys.exit(f"unknown fixture module(s): {', '.join(sorted(wanted - set(names)))}")
    OUT.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for name in names:
        module = importlib.import_module(f"fixtures.{name}")
        for path in module.make(OUT):
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
