"""search -> resume -> pareto -> export -> predict without torch, on the real stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from canao.runtime import verify_checksums

from .conftest import FAST_TARGET, TINY_SPACE, run_cli

NO_TORCH = """
import sys


class NoTorch:  # any attempt to import torch raises ImportError
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not available in this process")


sys.meta_path.insert(0, NoTorch())
from canao.cli import main

code = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(code)
"""


@pytest.mark.slow
def test_search_resume_export_predict(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'canao.db'}"
    common = ["--storage", url]
    code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target", str(FAST_TARGET),
                         "--study", "e2e", "--trials", "6", "--seed", "1",
                         "--artifacts", str(tmp_path / "art"), *common)
    assert code == 0, text
    assert "Pareto front" in text
    code, text = run_cli("-q", "resume", "--study", "e2e", "--trials", "3", *common)
    assert code == 0, text

    study = optuna.load_study(study_name="e2e", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(study.trials) == 9 and len(done) == 9
    assert all(t.user_attrs["fidelity"] == "untuned" for t in done)
    assert all(len(t.user_attrs["latency"]["samples_ms"]) == 5 for t in done)
    assert study.metric_names == ["accuracy", "latency_ms", "memory_mb"]

    code, text = run_cli("pareto", "--study", "e2e", "--json", *common)
    assert code == 0
    front = json.loads(text)
    assert {r["trial"] for r in front} == {t.number for t in study.best_trials}
    lat = sorted(r["latency_ms"] for r in front)
    budget = (lat[0] + lat[-1]) / 2
    expected = max((r for r in front if r["latency_ms"] <= budget),
                   key=lambda r: (r["accuracy"], -r["latency_ms"], -r["memory_mb"]))

    out = tmp_path / "bundle"
    code, text = run_cli("export", "--study", "e2e", "--max-latency-ms", str(budget),
                         "--out", str(out), *common)
    assert code == 0, text
    names = {p.name for p in out.iterdir()}
    assert {"model.so", "params.npz", "model.onnx", "arch.json", "metrics.json",
            "SHA256SUMS"} <= names
    verify_checksums(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == expected["trial"] and metrics["searched"]["latency_ms"] <= budget
    # Export rebuilds at the profile's final rung (0 trials: the shared database applied).
    assert metrics["tvm_version"].startswith("0.27") and metrics["fidelity"] == "final-0"
    assert metrics["searched"]["fidelity"] == "untuned"
    assert json.loads((out / "arch.json").read_text())["arch"] == expected["arch"]

    # A fresh process in which torch cannot be imported runs the bundle on the test split.
    logits_path = tmp_path / "logits.npy"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", str(out),
                           "--out", str(logits_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"accuracy {metrics['test_accuracy']:.4f} on 360 samples" in proc.stdout
    compiled = np.load(logits_path)

    from canao.candidate import load_model
    from canao.models import predict_logits
    from canao.study import CANDIDATE_FILE
    from canao.tasks import accuracy, get_task

    model = load_model(Path(study.trials[metrics["trial"]].user_attrs["artifact_dir"])
                               / CANDIDATE_FILE)
    test = get_task("digits").split("test")
    reference = predict_logits(model, test.x).numpy()
    np.testing.assert_allclose(compiled, reference, atol=1e-4, rtol=0)
    assert accuracy(compiled, test.y) == metrics["test_accuracy"]

    # Predictions on a user's own .npy input.
    np.save(tmp_path / "x.npy", test.x[:7])
    code, text = run_cli("predict", str(out), "--input", str(tmp_path / "x.npy"))
    assert code == 0 and text.split() == [str(int(v)) for v in reference[:7].argmax(1)]

    # Exporting onto an existing bundle is refused; a tampered bundle is detected.
    code, text = run_cli("export", "--study", "e2e", "--trial", str(metrics["trial"]),
                         "--out", str(out), *common)
    assert code == 2 and "already exists" in text
    with open(out / "params.npz", "ab") as f:
        f.write(b"x")
    code, text = run_cli("predict", str(out))
    assert code == 2 and "params.npz does not match its checksum" in text

