"""Shared test fixtures.

Apple's real graph and shape files live outside the repository, in
``../shared/fixtures/neuralhash-v3b`` seen from the project root. Tests that
need them skip cleanly when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = ROOT.parent / "shared" / "fixtures" / "neuralhash-v3b"
REAL_NET = REAL_DIR / "NeuralHashv3b-current.espresso.net"
REAL_SHAPE = REAL_DIR / "NeuralHashv3b-current.espresso.shape"
REAL_SEED = REAL_DIR / "neuralhash_128x96_seed1.dat"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL_NET.is_file() or not REAL_SHAPE.is_file():
        pytest.skip(f"Apple's NeuralHash structure files are not present in {REAL_DIR}")
    return REAL_DIR
