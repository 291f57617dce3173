"""Latency of compiled models against ONNX Runtime and PyTorch eager, in one run.

For the digits base and the Pareto candidates of a study: ONNX Runtime, PyTorch eager,
TVM untuned and TVM tuned (the study's final rung, with its trial budget and tuning time),
each at 1 and 2 threads. Engines are timed in interleaved rounds inside one process per
thread count, so every ratio compares figures taken moments apart on the same noisy machine;
the report gives medians over rounds of per-round medians, and ratios to ONNX Runtime.

    python benchmarks/latency.py --study S [--storage URL] [--candidates 3] [--rounds 7]

writes ``benchmarks/latency.md`` (``--out``) and its raw data beside it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _timing import interleaved_ms

HERE = Path(__file__).resolve().parent


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Build every model's untuned and tuned libraries; return what the timing runs need."""
    import optuna

    from canao import db
    from canao import study as st
    from canao.candidate import compile_folder, compile_model, save_model
    from canao.export import final_build
    from canao.models import load_or_train_base
    from canao.targets import parse_profile
    from canao.tasks import get_task

    cs = st.load(args.study, db.storage_url(args.storage))
    task = get_task(cs.space.task)
    base, base_info = load_or_train_base(cs.space, task)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    untuned = parse_profile(json.dumps({**cs.profile.to_dict(), "tuning": {"rung": "untuned"}}),
                            name=cs.profile.name + "-untuned")
    front = st.front(cs)["front"]
    picks = _spread(front, args.candidates)
    models: list[dict[str, Any]] = []

    # The base is exported and built like a candidate, tuned with the study's database.
    bdir = work / "base"
    bdir.mkdir(exist_ok=True)
    save_model(bdir, base, "fp32", 0)
    entries = [("base", bdir, None)] + [
        (f"trial {r['trial']}", st.artifact_dir(cs.study.trials[r["trial"]]),
         cs.study.trials[r["trial"]]) for r in picks]
    for name, folder, trial in entries:
        if trial is None:  # the base is exported and built (untuned) like a candidate
            udir = folder
            ures = compile_model(base, folder, untuned, reference_x=task.split("validation").x[:16],
                                 device=cs.device)
        else:
            udir = work / f"{name.replace(' ', '-')}-untuned"
            udir.mkdir(exist_ok=True)
            ures = compile_folder(folder, udir, untuned, device=cs.device)
        t0 = time.perf_counter()
        if trial is not None:
            tdir, tres = final_build(cs, trial)
        else:
            tdir = work / "base-tuned"
            tdir.mkdir(exist_ok=True)
            tres = compile_folder(folder, tdir, cs.profile, device=cs.device,
                                  db_dir=st.tuning_dir(cs), final=True)
        models.append({
            "name": name, "arch": (trial.user_attrs["arch"] if trial else
                                   {"hidden": base.config.hidden, "heads": list(base.config.heads),
                                    "ffn": list(base.config.ffn)}),
            "accuracy": trial.values[0] if trial else base_info["validation_accuracy"],
            "onnx": str(folder / "model.onnx"), "torch": str(folder / st.CANDIDATE_FILE),
            "untuned_dir": str(udir), "tuned_dir": str(tdir),
            "tuned_fidelity": tres["fidelity"], "tuning": tres.get("tuning", {}),
            "tuned_wall_s": time.perf_counter() - t0,
            "max_abs_error": max(ures["max_abs_error"], tres["max_abs_error"]),
        })
    trials = [t for t in cs.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    study_tuning = [{"trial": t.number, "arch": t.user_attrs.get("arch"),
                     "fidelity": t.user_attrs.get("fidelity"),
                     "cache_hit": t.user_attrs.get("cache_hit"),
                     "tuning": t.user_attrs.get("tuning", {}),
                     "build_s": t.user_attrs.get("build_s")} for t in cs.study.trials]
    return {"study": cs.name, "profile": cs.profile.to_dict(), "models": models,
            "study_trials": study_tuning, "complete": len(trials)}


def _spread(front: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """k Pareto points spread over the latency range (most accurate, fastest, between)."""
    rows = sorted(front, key=lambda r: r["latency_ms"])
    if len(rows) <= k:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (k - 1)) for i in range(k)})
    return [rows[i] for i in idx]


def time_all(plan: dict[str, Any], threads: int, rounds: int, inner: int) -> dict[str, Any]:
    """Runs in a child with TVM_NUM_THREADS=threads: interleaved rounds over every engine."""
    import onnxruntime as ort
    import torch

    from canao.candidate import load_model
    from canao.runtime import CompiledModel

    torch.set_num_threads(threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    engines: dict[str, dict[str, Any]] = {}
    for m in plan["models"]:
        net = load_model(Path(m["torch"]))
        shape = tuple(net.config.input_shape(1))
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        sess = ort.InferenceSession(m["onnx"], so, providers=["CPUExecutionProvider"])
        untuned, tuned = CompiledModel(m["untuned_dir"]), CompiledModel(m["tuned_dir"])

        def run_torch(net=net, x=x) -> None:
            with torch.inference_mode():
                net(torch.from_numpy(x)).numpy()

        # Every engine does a user's per-call work: a numpy array in, a numpy array out
        # (canao through its runtime, as an exported bundle is called).
        engines[m["name"]] = {
            "onnxruntime": lambda sess=sess, x=x: sess.run(None, {"input": x}),
            "torch": run_torch,
            "tvm_untuned": lambda u=untuned, x=x: u.run(x),
            "tvm_tuned": lambda t=tuned, x=x: t.run(x),
        }
    samples = {name: interleaved_ms(es, rounds=rounds, inner=inner)
               for name, es in engines.items()}
    return {"threads": threads, "samples_ms": samples, "loadavg": list(os.getloadavg())}


def report(plan: dict[str, Any], timings: list[dict[str, Any]], out: Path, cmd: str) -> str:
    from canao.measure import describe_machine

    lines = ["# Latency: TVM-compiled candidates against ONNX Runtime and PyTorch", "",
             f"Generated by `{cmd}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             f"Machine: {describe_machine()['cpu']}, {os.cpu_count()} cores (shared, noisy).",
             f"Study `{plan['study']}`, target profile `{plan['profile']['name']}` "
             f"(`{json.dumps(plan['profile']['target'])}`).", "",
             "Every engine is called as a user calls it: a numpy array in, a numpy array out "
             "(TVM through `canao.runtime.CompiledModel.run`, ONNX Runtime's `sess.run`, "
             "PyTorch eager with `torch.from_numpy` and `.numpy()`). "
             "Each figure is the median over interleaved rounds of a per-round median "
             "(5 batches of repeated calls, batch size 1). Ratios are to ONNX Runtime "
             "measured in the same round, then the median over rounds; below 1.0 is faster "
             "than ONNX Runtime.", ""]
    for t in timings:
        lines += [f"## {t['threads']} thread(s)", "",
                  "| model | architecture | ORT ms | torch ms | TVM untuned ms | TVM tuned ms "
                  "| tuned / ORT | untuned / ORT | torch / ORT |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in plan["models"]:
            s = t["samples_ms"][m["name"]]
            med = {e: statistics.median(v) for e, v in s.items()}
            ratio = {e: statistics.median(a / b for a, b in zip(v, s["onnxruntime"]))
                     for e, v in s.items()}
            a = m["arch"]
            arch = f"L{len(a['heads'])} d{a['hidden']} h{a['heads']} ffn{a['ffn']}"
            lines.append(
                f"| {m['name']} | {arch} | {med['onnxruntime']:.4f} | {med['torch']:.4f} | "
                f"{med['tvm_untuned']:.4f} | {med['tvm_tuned']:.4f} | "
                f"**{ratio['tvm_tuned']:.2f}×** | {ratio['tvm_untuned']:.2f}× | "
                f"{ratio['torch']:.2f}× |")
        lines += ["", f"Load average during the run: {t['loadavg']}", ""]
    lines += ["## Tuning of the measured models", "",
              "| model | rung | workloads | tuned here | trials | tuning s | validation accuracy |",
              "|---|---|---|---|---|---|---|"]
    for m in plan["models"]:
        tu = m["tuning"]
        lines.append(f"| {m['name']} | {m['tuned_fidelity']} | {tu.get('tasks', '-')} | "
                     f"{tu.get('tuned_tasks', 0)} | {tu.get('trials', 0)} | "
                     f"{tu.get('tuning_s', 0.0):.1f} | {m['accuracy']:.4f} |")
    st = plan["study_trials"]
    first, last = st[: len(st) // 2], st[len(st) // 2:]
    tf = sum(t["tuning"].get("tuning_s", 0.0) for t in first)
    tl = sum(t["tuning"].get("tuning_s", 0.0) for t in last)
    lines += ["", f"## Tuning time across the study ({len(st)} trials, shared database)", "",
              "| trial | architecture | rung | workloads | already tuned | tuned here | tuning s "
              "| cache hit | build s |", "|---|---|---|---|---|---|---|---|---|"]
    for t in st:
        tu, a = t["tuning"], t["arch"] or {}
        lines.append(f"| {t['trial']} | L{len(a.get('heads', []))} d{a.get('hidden')} "
                     f"h{a.get('heads')} ffn{a.get('ffn')} | {t['fidelity']} | "
                     f"{tu.get('tasks', '-')} | {tu.get('covered_before', '-')} | "
                     f"{tu.get('tuned_tasks', 0)} | {tu.get('tuning_s', 0.0):.1f} | "
                     f"{t['cache_hit']} | {(t['build_s'] or 0):.2f} |")
    ratio = f"{tl / tf:.3f}" if tf else "n/a"
    lines += ["", f"Tuning time of the first {len(first)} trials: {tf:.1f} s; of the last "
              f"{len(last)}: {tl:.1f} s; ratio last/first = **{ratio}**.", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage")
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--inner", type=int, default=50)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--work", default="canao_artifacts/benchmark-latency")
    ap.add_argument("--out", type=Path, default=HERE / "latency.md")
    ap.add_argument("--_time", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._time:  # child mode: time everything at one thread count
        plan, threads = json.loads(Path(args._time).read_text()), int(os.environ["TVM_NUM_THREADS"])
        print(json.dumps(time_all(plan, threads, args.rounds, args.inner)))
        return
    plan = prepare(args)
    plan_path = Path(args.work) / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    timings = []
    for n in (int(v) for v in args.threads.split(",")):
        env = {**os.environ, "TVM_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n)}
        proc = subprocess.run([sys.executable, __file__, "--study", args.study, "--rounds",
                               str(args.rounds), "--inner", str(args.inner), "--_time",
                               str(plan_path)], env=env, capture_output=True, text=True, check=True)
        timings.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cmd = "python benchmarks/latency.py " + " ".join(sys.argv[1:])
    print(report(plan, timings, args.out, cmd))
    args.out.with_suffix(".json").write_text(json.dumps({"plan": plan, "timings": timings},
                                                        indent=2))


if __name__ == "__main__":
    main()
