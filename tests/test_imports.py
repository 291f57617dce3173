import ast
import subprocess
import sys
from pathlib import Path

import canao


def test_import_canao_pulls_in_neither_torch_nor_tvm() -> None:
    code = ("import sys, canao, canao.space, canao.targets, canao.tasks, canao.study, canao.cli; "
            "heavy = [m for m in ('torch', 'tvm', 'onnx') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_share_one_root_and_the_builtin_meaning() -> None:
    from canao import CanaoError, SpaceError, StorageError, TargetError

    assert issubclass(SpaceError, CanaoError) and issubclass(SpaceError, ValueError)
    assert issubclass(TargetError, ValueError)
    assert issubclass(StorageError, RuntimeError)


def test_help_starts_without_torch_or_tvm() -> None:
    code = ("import sys; from canao.cli import main; "
            "[main([*c, '--help']) for c in ([], ['search'], ['export'], ['tuning'])]; "
            "print('HEAVY:' + ','.join(m for m in ('torch', 'tvm', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"


# The floors of the house, lowest first: a module imports only from its own floor or below
# (at the top of the file or inside a function alike). README "Where things go" names them.
FLOORS = [
    ("canao.errors", "canao.cache", "canao._locks", "canao._progress", "canao._shipped_files"),
    ("canao._config", "canao.tasks"),
    ("canao.space", "canao.targets"),
    ("canao.measure", "canao.models", "canao.db"),
    ("canao.compress", "canao.runtime"),
    ("canao.compile",),
    ("canao.candidate",),
    ("canao.study",),
    ("canao.export",),
    ("canao.service",),
    ("canao.cli",),
]
# Modules that import torch or TVM when loaded: the only canao modules a function may import
# locally (outside the command line, which loads each command's needs when it runs).
HEAVY = ("canao.models", "canao.compress", "canao.compile._build", "canao.compile._device",
         "canao.compile._tune", "canao.service._app")


def _floor(module: str) -> int:
    for i, owners in enumerate(FLOORS):
        if any(module == o or module.startswith(o + ".") for o in owners):
            return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS (and the README)")


def _canao_imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported canao module, imported inside a function, line) for each import in ``path``."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("canao"):
            root = Path(canao.__file__).parent
            # ``from canao import X``: X is a module of the package, or a name its __init__ holds
            names = ([f"canao.{a.name}" if (root / a.name).exists()
                      or (root / f"{a.name}.py").exists() else "canao" for a in node.names]
                     if node.module == "canao" else [node.module])
            found += [(n, id(node) in local, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in local, node.lineno) for a in node.names
                      if a.name.startswith("canao")]
    return found


def test_nothing_imports_upward_and_local_imports_are_only_for_torch_or_tvm() -> None:
    root = Path(canao.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if module == "canao" or "migrations" in rel.parts:
            continue
        floor = _floor(module)
        for imported, local, line in _canao_imports(path):
            if imported == "canao" or not imported.startswith("canao."):
                continue
            if _floor(imported) > floor:
                wrong.append(f"{rel}:{line} imports {imported} from a higher floor")
            heavy = any(imported == h or imported.startswith(h + ".") for h in HEAVY)
            if local and not heavy and not module.startswith("canao.cli"):
                wrong.append(f"{rel}:{line} imports {imported} inside a function; it is light")
    assert not wrong, "\n".join(wrong)


def test_status_loads_neither_optuna_nor_sqlalchemy(finished_study: dict) -> None:
    code = ("import sys; from canao.cli import main; "
            f"rc = main(['status', '--storage', {finished_study['url']!r}]); "
            "print('HEAVY:' + ','.join(m for m in ('optuna', 'sqlalchemy', 'torch', 'tvm') "
            "if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY: 0", out.stdout
    assert "trials" in out.stdout
