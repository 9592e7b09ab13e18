"""The example job kinds and training scripts, shipped inside the package.

``jobqueue up`` runs its worker with these kinds, so they travel with every
install (a wheel, pipx) rather than living only in a source checkout.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
KINDS_FILE = EXAMPLES_DIR / "kinds.toml"
