"""Importing the heavy modules (torch, torch._dynamo: ~300k objects) with the cyclic garbage collector off.

During those imports the collector ran 5 full collections, 0.3 s, and found nothing to collect: `python -c
"import torch, torch._dynamo"` took 2.7 s with it and 2.15 s without. `without_gc` turns it off for a block
of imports and then freezes what exists (`gc.freeze`: later collections never scan it again, and forked
children do not copy its pages by touching it).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def without_gc() -> Iterator[None]:
    """The block runs with the collector off; afterwards everything is frozen and the collector is back on
    (unless it was off before)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
