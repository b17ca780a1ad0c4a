"""`workbench sweep analyze`: the battery (`sweep.battery`) on every checkpoint of every
member, cached per member, then `sweep.json` and its figures (`sweep.laws`).

```
runs/NAME/<member>/battery.json   schema workbench.sweep_battery/1: the battery's settings
                                  and one record per checkpoint step (written after each)
runs/NAME/sweep.json              schema workbench.sweep/1 (sweep.laws)
runs/NAME/*.fig.json              its plotly figures (sweep.figures)
```

Resumable: a checkpoint already in `battery.json` (with the same settings) is never measured
again, so a killed `analyze` continues where it stopped and a second one only measures new
checkpoints. Inputs that do not depend on the weights are built once per world and shared by
the members trained on it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sweep.battery import BatteryConfig, WorldInputs, config_record, run_battery, world_inputs
from sweep.laws import REPORT_FILE, build_report, member_entry
from sweep.member import Member
from sweep.plan import BATTERY_FILE, Plan, member_state
from sweep.run import check_world
from workbench.layout import METRICS
from workbench.models.checkpoints import list_checkpoints, write_json_atomic
from workbench.training.run_dir import metric_lines

logger = logging.getLogger(__name__)
BATTERY_SCHEMA = "workbench.sweep_battery/1"


@dataclass(frozen=True)
class AnalyzeConfig:
    """How `analyze_sweep` runs.

    Args:
        battery: what the battery measures on each checkpoint.
        overwrite: measure every checkpoint again (and replace results of other settings).
        device: where the models run.
        progress: a progress bar over each member's checkpoints.
    """

    battery: BatteryConfig = field(default_factory=BatteryConfig)
    overwrite: bool = False
    device: str = "cpu"
    progress: bool = True


def _read_battery(path: Path, cfg: AnalyzeConfig) -> dict[int, dict[str, Any]]:
    """The checkpoint records cached at `path` (empty with `overwrite` or none there)."""
    if cfg.overwrite or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        logger.warning("%s is damaged; measuring its member again", path)
        return {}
    if data.get("schema") != BATTERY_SCHEMA:
        raise ValueError(f"{path} is not a battery file ({data.get('schema')!r}); move it "
                         "away or pass --overwrite")
    if data.get("config") != config_record(cfg.battery):
        raise ValueError(f"{path} was measured with other battery settings; pass --overwrite "
                         "to measure every checkpoint again with these")
    return {int(r["step"]): r for r in data.get("checkpoints", [])}


def analyze_member(plan: Plan, member: Member, cfg: AnalyzeConfig,
                   inputs: dict[tuple[str, int], WorldInputs],
                   log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """The battery on every checkpoint of `member` that `battery.json` lacks; returns the
    file's content (written after each checkpoint, temp file + rename)."""
    from workbench.models.refs import ModelRef
    from workbench.world import load_corpus

    path = plan.member_dir(member) / BATTERY_FILE
    done = _read_battery(path, cfg)
    todo = [c for c in ModelRef.of(plan.run_dir(member)).checkpoints if c.step not in done]
    if todo:
        check_world(plan, member.world_id)  # the world the member was trained on, unchanged
    record = {"schema": BATTERY_SCHEMA, "member": member.name,
              "config": config_record(cfg.battery), "checkpoints": []}
    t0 = time.perf_counter()
    for ckpt in tqdm(todo, desc=member.name, disable=not cfg.progress, leave=False):
        step = ckpt.step
        model = ckpt.load(cfg.device)
        key = (member.world_id, model.cfg.n_ctx)
        if key not in inputs:
            corpus = load_corpus(plan.world_dir(member.world_id))
            inputs[key] = world_inputs(model, corpus, cfg.battery)
        t = time.perf_counter()
        done[step] = {"step": step, **run_battery(model, inputs[key], cfg.battery),
                      "seconds": round(time.perf_counter() - t, 3)}
        record["checkpoints"] = [done[s] for s in sorted(done)]
        write_json_atomic(path, record)
    record["checkpoints"] = [done[s] for s in sorted(done)]
    if todo:
        log(f"{member.name}: {len(todo)} checkpoint(s) measured in "
            f"{time.perf_counter() - t0:.1f} s ({len(done)} in all)")
    elif done:
        log(f"{member.name}: all {len(done)} checkpoint(s) measured already")
    return record


def loss_curve(plan: Plan, member: Member) -> dict[str, list[float]]:
    """Training and validation loss against step, from the run's `metrics.jsonl`."""
    out: dict[str, list[float]] = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    for _, row in metric_lines(plan.run_dir(member) / METRICS):  # torn lines left out
        if "loss" in row:
            out["step"].append(row["step"])
            out["loss"].append(row["loss"])
        if "val_loss" in row:
            out["val_step"].append(row["step"])
            out["val_loss"].append(row["val_loss"])
    return out


def battery_cost(n_checkpoints: int, compute: float, largest: float) -> float:
    """About what the battery costs on a member (to submit the costliest first): per
    checkpoint, a fixed part (probe fits, ROME steps) and a part growing with the model. On
    the `cpu` family, one thread per job: about 8 s per checkpoint at 0.2M non-embedding
    parameters, 12 s at 0.6M, 17 s at 1.8M, 23 s at 3.2M (the largest), close to
    `1 + 2 C / C_largest` times the fixed part.

    >>> battery_cost(12, 1.0, 4.0), battery_cost(12, 4.0, 4.0)
    (18.0, 36.0)
    """
    return n_checkpoints * (1.0 + 2.0 * compute / largest)


def analyze_member_set(plan: Plan, members: list[Member], cfg: AnalyzeConfig = AnalyzeConfig(),
                       *, log: Callable[[str], None] = logger.info) -> None:
    """The battery on every unmeasured checkpoint of `members` only (what one member job
    of `workbench sweep analyze` runs); no `sweep.json` (`analyze_sweep` writes it from the
    caches)."""
    inputs: dict[tuple[str, int], WorldInputs] = {}
    for member in members:
        if list_checkpoints(plan.run_dir(member)):
            analyze_member(plan, member, cfg, inputs, log)
        else:
            log(f"{member.name}: no checkpoint yet; left out")


def analyze_sweep(plan: Plan, cfg: AnalyzeConfig = AnalyzeConfig(), *,
                  log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """The battery on every checkpoint of every member, then `sweep.json` and its figures
    under the plan directory. Returns the `workbench.sweep/1` report.

    Raises:
        ValueError: no member has a checkpoint yet (train them first), or a member's
            `battery.json` holds other settings (without `overwrite`).
    """
    from sweep.figures import FIGURES
    from workbench.analysis import write_report

    members = plan.members()
    started = [m for m in members if list_checkpoints(plan.run_dir(m))]
    if not started:
        raise ValueError(f"no member of {plan.root} has a checkpoint yet; train them first: "
                         f"`workbench sweep run {plan.root}`")
    inputs: dict[tuple[str, int], WorldInputs] = {}
    entries = []
    for i, member in enumerate(members, 1):
        if member not in started:
            log(f"[{i}/{len(members)}] {member.name}: no checkpoint yet; left out")
            continue
        battery = analyze_member(plan, member, cfg, inputs,
                                 lambda line, i=i: log(f"[{i}/{len(members)}] {line}"))
        entries.append(member_entry(member, battery["checkpoints"], loss_curve(plan, member),
                                    member_state(plan, member) == "done"))
    out = build_report(plan.spec.name, plan.spec.to_dict(), entries, config_record(cfg.battery),
                       left_out=[m.name for m in members if m not in started])
    write_report(out, plan.root / REPORT_FILE, FIGURES, overwrite=True)  # made from the caches
    return out
