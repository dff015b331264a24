"""Training tests import their helpers (patch_factories, tiny) from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
