"""Weight storage for deployment: fp32, weight-only int8, or k-means clustered weights.

Every linear layer of the encoder's blocks becomes a :class:`DeployLinear` that stores its
weight pre-transposed (``(in, out)``, so neither the exporter nor TVM transposes it per call)
in one of three forms, and rebuilds the fp32 weight *inside the graph*:

* ``fp32``: the weight itself;
* ``fp16``: half-precision storage, widened to fp32 in the graph (TVM's CPU path computes
  fp32; the win is memory, as for int8);
* ``int8`` (weight-only): int8 values with one fp32 scale per output channel (symmetric,
  round to nearest), dequantised as ``q * scale``;
* clustered (Tabani et al., 2021): each tensor's values replaced by the nearest of ``k``
  shared values (1-D k-means); stored as uint8 indices plus a ``k``-entry fp32 codebook and
  rebuilt as ``codebook[idx]``.

Because the compressed form is what the module holds, the ONNX graph and the compiled TVM
module hold it too (weights are exported unfolded and passed to TVM as call-time inputs,
so neither constant folding widens them back); the parameter bytes really shrink. The
PyTorch forward computes exactly what the compiled graph computes, so accuracy measured on
the deployed module is the compiled module's accuracy.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from canao.models import Encoder

MAX_CLUSTERS = 256  # indices are stored as uint8


def kmeans_1d(values: np.ndarray, k: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars: (uint8 indices, sorted fp32 codebook).

    Centroids start at evenly spaced quantiles (deterministic, no random restarts); on a
    line, assignment is a search among the midpoints between sorted centroids.
    """
    if not 2 <= k <= MAX_CLUSTERS:
        raise ValueError(f"clusters must lie in [2, {MAX_CLUSTERS}], got {k}")
    flat = values.astype(np.float64).ravel()
    centroids = np.unique(np.quantile(flat, (np.arange(k) + 0.5) / k))
    for _ in range(iters):
        idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
        sums = np.bincount(idx, weights=flat, minlength=len(centroids))
        counts = np.bincount(idx, minlength=len(centroids))
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    return idx.astype(np.uint8).reshape(values.shape), centroids.astype(np.float32)


class DeployLinear(nn.Module):
    """``y = x @ W + b`` with ``W`` of shape ``(in, out)`` stored as fp32, int8 or clustered."""

    def __init__(self, linear: nn.Linear, weights: str = "fp32", clusters: int = 0) -> None:
        super().__init__()
        w = linear.weight.detach().t().contiguous()  # (in, out)
        self.register_buffer("bias", linear.bias.detach().clone())
        if clusters:
            self.kind = f"clustered-{clusters}"
            idx, codebook = kmeans_1d(w.numpy(), clusters)
            self.register_buffer("idx", torch.from_numpy(idx))
            self.register_buffer("codebook", torch.from_numpy(codebook))
        elif weights == "int8":
            self.kind = "int8"
            scale = (w.abs().amax(dim=0) / 127.0).clamp(min=1e-12)  # (out,)
            self.register_buffer("q", torch.round(w / scale).clamp(-127, 127).to(torch.int8))
            self.register_buffer("scale", scale.float())
        elif weights == "fp16":
            self.kind = "fp16"
            self.register_buffer("h", w.to(torch.float16))
        elif weights == "fp32":
            self.kind = "fp32"
            self.register_buffer("w", w.clone())
        else:
            raise ValueError(f"unknown weight storage '{weights}' (fp32, fp16, int8)")

    def weight(self) -> torch.Tensor:
        if self.kind == "fp32":
            return self.w
        if self.kind == "int8":
            return self.q.to(torch.float32) * self.scale  # (in, out) * (out,)
        if self.kind == "fp16":
            return self.h.to(torch.float32)
        return self.codebook[self.idx.to(torch.int64)]  # (in, out) gathered from (k,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight() + self.bias

    def stored_bytes(self) -> int:
        """Bytes of the weight's stored form (bias excluded)."""
        names = {"fp32": ("w",), "fp16": ("h",), "int8": ("q", "scale")}.get(
            self.kind, ("idx", "codebook"))
        return sum(getattr(self, n).numel() * getattr(self, n).element_size() for n in names)


BLOCK_LINEARS = ("attn.q", "attn.k", "attn.v", "attn.o", "fc1", "fc2")


def deploy(model: Encoder, weights: str = "fp32", clusters: int = 0) -> Encoder:
    """A copy of ``model`` whose block linears store their weights as asked.

    The patch/token embedding, norms and classifier stay fp32: they are a small share of the
    bytes and the most sensitive to error.
    """
    out = copy.deepcopy(model).eval()
    for block in out.blocks:
        for path in BLOCK_LINEARS:
            owner_path, _, name = path.rpartition(".")
            owner = block.get_submodule(owner_path) if owner_path else block
            setattr(owner, name, DeployLinear(getattr(owner, name), weights, clusters))
    return out


def compressed_bytes(model: nn.Module) -> dict[str, int]:
    """Stored weight bytes of the deploy linears, and what they would be in fp32."""
    layers = [m for m in model.modules() if isinstance(m, DeployLinear)]
    stored = sum(m.stored_bytes() for m in layers)
    fp32 = sum(4 * m.weight().numel() for m in layers)
    return {"stored": stored, "fp32": fp32}


def load_candidate(path: str) -> Encoder:
    """A candidate saved by the search (``candidate.pt``), deployed as it was compiled."""
    from canao.models import EncoderConfig

    saved = torch.load(path, weights_only=True)
    model = Encoder(EncoderConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return deploy(model, saved.get("weights", "fp32"), saved.get("clusters", 0))
