"""The files canao ships by name: search spaces and target profiles.

``search_spaces/`` and ``tvm_targets/`` at the checkout's top level are their source; a
built wheel carries copies inside the package (see ``setup.py``).
"""

from __future__ import annotations

from pathlib import Path


def shipped_dir(folder: str) -> Path:
    """The folder of shipped files (``search_spaces/``, ``tvm_targets/``).

    An installed wheel carries them inside the package as ``canao/_shipped/FOLDER`` (setup.py
    copies the checkout's top-level folders there when the wheel is built); an editable install
    or a run from the checkout has no such copy and reads the checkout's top-level folder.
    """
    package = Path(__file__).resolve().parent
    installed = package / "_shipped" / folder
    return installed if installed.is_dir() else package.parent / folder


def resolve_shipped(path: str | Path, folder: str, suffix: str, error: type[Exception],
                    what: str) -> Path:
    """``path`` if it is a file, else the shipped file a bare name (suffix optional) names.

    Anything else raises ``error``, listing the shipped names.
    """
    p = Path(path)
    if p.is_file():
        return p
    candidate = shipped_dir(folder) / (p.name if p.suffix else p.name + suffix)
    if p.parent == Path(".") and candidate.is_file():
        return candidate
    known = ", ".join(sorted(f.stem for f in shipped_dir(folder).glob(f"*{suffix}"))) or "none"
    raise error(f"{path}: no such {what} (shipped: {known})")
