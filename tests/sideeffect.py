"""A module outside the allowed modules whose import leaves a trace: it must never load."""

import os
from pathlib import Path

Path(os.environ.get("PQ_SIDE_EFFECT_MARKER", "/tmp/pq-side-effect-marker")).touch()


def run() -> None:
    return None
