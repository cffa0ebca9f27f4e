"""The one place randomness comes from: a member's generators are derived from its plan row.

A generator is keyed by (stream name, seed), so "a member depends only on its row" holds by
construction: no generator is shared between members or advanced by another member's work.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(stream: str, *seeds: int) -> int:
    """A 63-bit seed for ``stream`` from integer seeds; distinct streams never collide in
    practice.
    """
    key = stream + ":" + ",".join(str(int(s)) for s in seeds)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def torch_generator(stream: str, *seeds: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``stream`` seeded from ``seeds``."""
    return torch.Generator().manual_seed(derive_seed(stream, *seeds))


def numpy_generator(stream: str, *seeds: int) -> np.random.Generator:
    """A numpy ``Generator`` for ``stream`` seeded from ``seeds``."""
    return np.random.default_rng(derive_seed(stream, *seeds))
