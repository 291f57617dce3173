"""Export an encoder to ONNX for TVM's importer (and ONNX Runtime)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from canao.compress.deploy import DeployLinear, deploy
from canao.models.encoder import Encoder

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: Encoder, path: Path, batch_size: int = 1) -> None:
    """Write ``model`` with a static input shape (batch ``batch_size``) to ``path``.

    The TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript and its
    graphs import into TVM's Relax frontend as plain ops. Block linears are exported as
    :class:`~canao.compress.deploy.DeployLinear` (a plain model gets fp32 ones), which hold
    their weights pre-transposed, so constant folding can stay off: folding would otherwise
    widen int8 or clustered weights back into fp32 constants.
    """
    if not any(isinstance(m, DeployLinear) for m in model.modules()):
        model = deploy(model)
    c = model.config
    shape = c.input_shape(batch_size)
    x = torch.zeros(shape, dtype=torch.float32 if c.input_dtype == "float32" else torch.int64)
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not ours
        # torch annotates ``f`` as a path only; the TorchScript exporter writes to a file-like
        # object as well (see the module's "f can be a file-like object" comment).
        torch.onnx.export(model, (x,), buf,  # type: ignore[arg-type]
                          dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          do_constant_folding=False)
    path.write_bytes(buf.getvalue())
