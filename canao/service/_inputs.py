"""What requests carry: JSON bodies, uploaded files (read by the CLI's own parsers)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from canao.space import shipped_dir


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trials: int = Field(10, ge=1, le=100_000, description="COMPLETE trials to add")
    workers: int = Field(1, ge=1, description="canao worker processes to share them")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial: int | None = Field(None, ge=0, description="export this trial ...")
    max_latency_ms: float | None = Field(None, ge=0, description="... or the most accurate "
                                         "Pareto trial within this latency")
    max_memory_mb: float | None = Field(None, ge=0, description="... and this memory")


def _read_upload(upload: UploadFile, limit: int, what: str) -> str:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{what} '{upload.filename}' is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(400, f"{what} '{upload.filename}' is not UTF-8 text") from e


def _stem(filename: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(filename or "").stem).strip("._-")[:64]
    return stem or "uploaded"


def _input(shipped: str | None, upload: UploadFile | None, folder: str, suffix: str,
           what: str, field: str, limit: int) -> tuple[str, str, str]:
    """(text, name, where) of a shipped file named by ``shipped`` or of an uploaded one."""
    if (shipped is None) == (upload is None):
        raise HTTPException(400, f"give either '{field}' (a shipped {what}) or "
                            f"'{field}_file' (an upload)")
    if upload is not None:
        return _read_upload(upload, limit, what), _stem(upload.filename), \
            f"uploaded {what} '{upload.filename}'"
    shipped = shipped or ""
    known = sorted(p.stem for p in shipped_dir(folder).glob(f"*{suffix}"))
    stem = shipped[:-len(suffix)] if shipped.endswith(suffix) else shipped
    if stem not in known:  # only names: a path here could read any file on the server
        raise HTTPException(400, f"{field} {shipped!r}: no shipped {what} of that name "
                            f"(shipped: {', '.join(known) or 'none'}); upload a file instead")
    return (shipped_dir(folder) / f"{stem}{suffix}").read_text(), stem, f"shipped {what} '{stem}'"


def _refuse_local_paths(space: Any, where: str) -> None:
    """A space sent to the service may not name files on the server (data or checkpoint)."""
    if ":" in space.task:
        raise HTTPException(400, f"{where}: task '{space.task}' reads a file on the server; "
                            "the service runs built-in tasks only (use the CLI for file tasks)")
    ckpt = space.base.model.checkpoint
    if ckpt and (os.sep in ckpt or "/" in ckpt or ckpt.startswith((".", "~"))):
        raise HTTPException(400, f"{where}: base.model.checkpoint '{ckpt}' is a path on the "
                            "server; the service takes shipped checkpoint names only")
