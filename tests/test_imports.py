import subprocess
import sys


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
