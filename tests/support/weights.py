"""The content hash of a state dict, to pin the golden tiny weights."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict, independent of how it was stored.

    sha256 over, for each key in sorted order, the key's UTF-8 bytes then the tensor's
    little-endian float32 bytes in C order. The golden ``scclip-tiny`` weights hash to
    ``a690eadd…b341``.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(key.encode("utf-8"))
        digest.update(tensor.numpy().astype("<f4", copy=False).tobytes(order="C"))
    return digest.hexdigest()
