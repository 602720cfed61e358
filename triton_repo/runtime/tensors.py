"""Reading Triton python-backend tensors wherever they live (host or GPU memory).

`pb_utils.Tensor.as_numpy()` only reads host memory: a tensor a GPU model produced (a BLS response, or an
input when FORCE_CPU_ONLY_INPUT_TENSORS is "no") is read through DLPack instead. torch is imported only on
that path, so a CPU-only python model never needs it for this.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_cpu(tensor: Any) -> bool:
    """True for host memory; a stub without `is_cpu()` (older python backends) only has host tensors."""
    check = getattr(tensor, "is_cpu", None)
    return True if check is None else bool(check())


def to_numpy(tensor: Any) -> np.ndarray:
    """The tensor's data as a host numpy array (copied from the GPU when it lives there)."""
    if is_cpu(tensor):
        return tensor.as_numpy()
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack()).cpu().numpy()


def to_torch(tensor: Any):
    """A torch view of the tensor on its own device (no copy: DLPack)."""
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
