"""Put this checkout's src/ first on sys.path, so rule scripts import the package they ship
with, also inside ``--sdm conda`` environments and on cluster nodes where it isn't installed."""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
