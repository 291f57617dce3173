"""Every finished trial of a study as plot data, and the front written as PNG or HTML.

The API's ``/trials``, the Pareto page and ``canao plot`` all draw from :func:`plot_points`.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from canao import _config
from canao.service._config import ServiceError
from canao.space import ArchConfig
from canao.study import CanaoStudy, front, is_feasible, study_base_accuracy, trial_row

PAGE = "pareto.html"
_DATA_SLOT = "/*CANAO_DATA*/null"  # the page fetches its data unless it is written here


@functools.lru_cache(maxsize=4096)
def _label(arch_json: str) -> str:
    """An architecture's one-line description (validated once per distinct architecture)."""
    return ArchConfig.from_dict(json.loads(arch_json)).describe()


def plot_points(cs: CanaoStudy) -> dict[str, Any]:
    """Every COMPLETE trial with whether it meets the budgets and sits on the feasible front."""
    report = front(cs)
    on_front = {r["trial"] for r in report["front"]}
    done = cs.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    base = study_base_accuracy(done)
    points = []
    for t in done:
        row = trial_row(t)
        label = _label(json.dumps(row["arch"], sort_keys=True)) if row["arch"] else "?"
        points.append({**row, "label": label, "pareto": t.number in on_front,
                       "feasible": is_feasible(t, cs.budgets, base),
                       "cache_hit": bool(t.user_attrs.get("cache_hit"))})
    counts: dict[str, int] = {}
    for t in cs.study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return {"study": cs.name, "space": cs.space.name, "target": cs.profile.name,
            "budgets": _config.to_dict(cs.budgets), "base_accuracy": base,
            "states": dict(sorted(counts.items())), "points": points,
            "front": [r["trial"] for r in report["front"]], "infeasible": report["infeasible"]}


def page_html(data: dict[str, Any] | None = None) -> str:
    """The Pareto page; with ``data`` it is self-contained (no server, no refresh)."""
    html = resources.files("canao.service").joinpath("static", PAGE).read_text()
    if data is None:
        return html
    blob = json.dumps(data).replace("</", "<\\/")  # a value cannot close the script element
    return html.replace(_DATA_SLOT, blob, 1)


def write_plot(cs: CanaoStudy, out: Path) -> int:
    """Write the front of ``cs`` to ``out`` (``.png`` or ``.html``); returns the point count."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html"):
        raise ServiceError(f"--out {out}: write .png or .html")
    if not out.resolve().parent.is_dir():
        raise ServiceError(f"--out {out}: folder {out.resolve().parent} does not exist")
    data = plot_points(cs)
    if suffix == ".html":
        out.write_text(page_html(data))
    else:
        _png(data, out)
    return len(data["points"])


def _png(data: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib
    except ImportError as e:
        raise ServiceError("PNG plots need matplotlib: pip install -e '.[service]'") from e
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    pts = data["points"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    budgets = data["budgets"]
    if pts:
        mem = [p["memory_mb"] for p in pts]
        for axis, y, label in ((ax, "accuracy", "validation accuracy"), (ax2, "memory_mb", "memory (MB)")):
            sc = axis.scatter([p["latency_ms"] for p in pts], [p[y] for p in pts], c=mem,
                              cmap="viridis", s=[70 if p["pareto"] else 28 for p in pts],
                              edgecolors=["black" if p["pareto"] else "none" for p in pts],
                              alpha=[1.0 if p["feasible"] else 0.35 for p in pts])
            for p in pts:
                if p["pareto"]:
                    axis.annotate(str(p["trial"]), (p["latency_ms"], p[y]), fontsize=8,
                                  xytext=(4, 4), textcoords="offset points")
            axis.set_xlabel("median latency (ms)")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        fig.colorbar(sc, ax=[ax, ax2], label="memory (MB)")
        front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["latency_ms"])
        ax.step([p["latency_ms"] for p in front], [p["accuracy"] for p in front], where="post",
                color="black", lw=0.8)
    if budgets.get("max_latency_ms") is not None:
        for axis in (ax, ax2):
            axis.axvline(budgets["max_latency_ms"], ls="--", color="crimson", label="latency budget")
    if budgets.get("max_accuracy_drop") is not None and data["base_accuracy"] is not None:
        ax.axhline(data["base_accuracy"] - budgets["max_accuracy_drop"], ls="--", color="crimson",
                   label="accuracy budget")
    if budgets.get("max_memory_mb") is not None:
        ax2.axhline(budgets["max_memory_mb"], ls="--", color="crimson", label="memory budget")
    ax.set_title(f"{data['study']}: {len(pts)} finished trials, front {data['front']}")
    ax2.set_title(f"space {data['space']}, target {data['target']}")
    fig.savefig(out, dpi=110)
    plt.close(fig)
