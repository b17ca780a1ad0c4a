"""A planned sweep on disk: one directory per member and one command per member.

```
runs/NAME/
  sweep_spec.json               the resolved spec (schema workbench.sweep_spec/1), its members
  commands.txt                  one shell command per line: the worlds, then every member
  worlds/world/                 a corpus (`workbench world build` layout), one per mixture
  worlds/world_drop-NAME/       the world without the documents of drop rule NAME
                                (`workbench.world.subset`), for the members with that drop
  L2-d64-h2_steps400_seed0/
    member.json                 its configs, N, D = steps x batch_size x n_ctx, C = 6ND
    run/                        a `workbench train --run` directory (checkpoints/step_*)
    battery.json                `workbench sweep analyze`: the battery per checkpoint
  sweep.json, sweep.*.fig.json  `workbench sweep analyze`: laws, verdicts, figures
```

Every line of `commands.txt` can run on its own, in any order and in parallel (a SLURM array,
GNU parallel): a member builds its world when it is missing (under a lock, once) and is never
trained twice at the same time or again once finished.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.executor import JOBS_DIR
from sweep.member import Member
from sweep.spec import SweepSpec
from workbench.layout import CHECKPOINTS_DIR, RUN_JSON
from workbench.models.checkpoints import step_dir_name, write_json_atomic, write_text_atomic
from workbench.outputs import check_replaceable, check_writable
from workbench.training.run_dir import config_diff

SPEC_FILE = "sweep_spec.json"
MEMBER_FILE = "member.json"
COMMANDS_FILE = "commands.txt"
WORLDS_DIR = "worlds"
RUN_DIR = "run"
BATTERY_FILE = "battery.json"  # written by `workbench sweep analyze` (sweep.analyze)
# Reports gathered from the members into the plan's folder (`sweep analyze`, `attribute
# verify`, `attribute lds`): replaced with the plan, as the members they summarise may go.
GATHERED = ("sweep.json", "sweep.*.json", "verify.json", "verify.*.json", "verify_plan.json",
            "lds.json", "lds.*.json")
SPEC_SCHEMA = "workbench.sweep_spec/1"
MEMBER_SCHEMA = "workbench.sweep_member/1"


@dataclass(frozen=True)
class Plan:
    """A sweep planned under `root`: where each member, its run and its world live."""

    root: Path
    spec: SweepSpec

    def members(self) -> list[Member]:
        return self.spec.members()

    def member(self, name: str) -> Member:
        """The member called `name`.

        Raises:
            ValueError: no member has that name (naming the members).
        """
        members = {m.name: m for m in self.members()}
        if name not in members:
            raise ValueError(f"{self.root} has no member {name!r}; its members: "
                             f"{', '.join(members)}")
        return members[name]

    def member_dir(self, member: Member) -> Path:
        return self.root / member.name

    def run_dir(self, member: Member) -> Path:
        """The member's `workbench train --run` directory (what analyses load)."""
        return self.root / member.name / RUN_DIR

    def world_dir(self, world_id: str) -> Path:
        return self.root / WORLDS_DIR / world_id


@dataclass(frozen=True)
class PlanOutcome:
    """What `plan_sweep` did: `status` is `new`, `unchanged` or `replaced`; `kept` and
    `removed` name the member directories an overwrite kept (same config) and deleted."""

    plan: Plan
    status: str
    kept: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def member_record(member: Member) -> dict[str, Any]:
    """What `member.json` holds."""
    return {"schema": MEMBER_SCHEMA, **member.to_dict(), "run": RUN_DIR}


def spec_record(spec: SweepSpec) -> dict[str, Any]:
    """What `sweep_spec.json` holds: the resolved spec, its members and worlds (and, with a
    drop axis, `subsets`: each subset corpus's world, drop name and rule)."""
    out = {
        "schema": SPEC_SCHEMA,
        "spec": spec.to_dict(),
        "members": [m.name for m in spec.members()],
        "worlds": {wid: {"config": cfg.to_dict(), "tokens": tokens}
                   for wid, (cfg, tokens) in spec.worlds().items()},
    }
    subsets = {cid: {"world": wid, "drop": name, "rule": rule.to_dict()}
               for cid, (wid, name, rule) in spec.corpora().items() if rule is not None}
    if subsets:
        out["subsets"] = subsets
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} {path} is damaged ({exc}); plan the sweep again with "
                         "`workbench sweep plan SPEC --out DIR --overwrite`") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object; plan the sweep again")
    return data


def load_plan(root: str | Path) -> Plan:
    """The plan written by `plan_sweep` under `root`.

    Raises:
        FileNotFoundError: `root` does not exist.
        ValueError: `root` is not a sweep plan, or its `sweep_spec.json` is damaged.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep {root} does not exist; plan it first: `workbench sweep "
                                f"plan SPEC --out {root}`")
    path = root / SPEC_FILE
    if not path.is_file():
        raise ValueError(f"{root} is not a sweep plan (it has no {SPEC_FILE}); make one with "
                         f"`workbench sweep plan SPEC --out {root}`")
    data = _read_json(path, "sweep spec")
    if data.get("schema") != SPEC_SCHEMA or not isinstance(data.get("spec"), dict):
        raise ValueError(f"{path} is not a {SPEC_SCHEMA} file; plan the sweep again with "
                         "`workbench sweep plan SPEC --out DIR --overwrite`")
    return Plan(root, SweepSpec.from_dict(data["spec"], source=str(path)))


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out += config_diff({key: a}, {key: b}, prefix)
    return out


def check_member_dir(plan: Plan, member: Member) -> None:
    """Refuse a member directory made by another spec: its `member.json`, or the run's
    `run.json`, differs from the plan's member.

    Raises:
        ValueError: naming the differences and the fix.
    """
    mdir = plan.member_dir(member)
    path = mdir / MEMBER_FILE
    if not path.is_file():
        raise ValueError(f"member directory {mdir} has no {MEMBER_FILE}; plan the sweep "
                         f"again (`workbench sweep plan SPEC --out {plan.root}`) to write it")
    diffs = _diff(_read_json(path, "member file"), member_record(member))
    run_json = plan.run_dir(member) / RUN_JSON
    if not diffs and run_json.is_file():
        run = _read_json(run_json, "run config")
        model = {k: v for k, v in run.get("model", {}).items() if k != "d_vocab"}
        expected = {k: v for k, v in member.model.to_dict().items() if k != "d_vocab"}
        diffs = (_diff(model, expected, "run.model.")
                 + _diff(run.get("train", {}), member_record(member)["train"], "run.train."))
    if diffs:
        raise ValueError(f"member directory {mdir} was made by another spec ("
                         + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")
                         + f"); plan again with --overwrite (`workbench sweep plan SPEC --out "
                         f"{plan.root} --overwrite`) or move the directory away")


def member_state(plan: Plan, member: Member) -> str:
    """`done` (its last checkpoint exists), `started` (some checkpoint exists) or `new`."""
    ckpts = plan.run_dir(member) / CHECKPOINTS_DIR
    final = ckpts / step_dir_name(member.steps)
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return "done"
    if ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
        return "started"
    return "new"


def command_lines(plan: Plan, program: str = "workbench") -> list[str]:
    """`commands.txt`: a `sweep world` line per world, then a `sweep run --member` line per
    member (absolute paths: the lines run from anywhere)."""
    root = shlex.quote(str(plan.root.resolve()))
    worlds = [f"{program} sweep world {root} --world {shlex.quote(w)}"
              for w in plan.spec.worlds()]
    members = [f"{program} sweep run {root} --member {shlex.quote(m.name)}"
               for m in plan.members()]
    return worlds + members


def _owned_member_dir(path: Path) -> bool:
    """A member directory of ours: `member.json`, `run/` (a run of ours) and hidden files."""
    if not (path / MEMBER_FILE).is_file():
        return False
    for entry in path.iterdir():
        if entry.name in (MEMBER_FILE, BATTERY_FILE) or entry.name.startswith("."):
            continue
        if entry.name != RUN_DIR:
            return False
        if any(entry.iterdir()):
            check_replaceable(entry, "run")
    return True


def _stale(root: Path, new: SweepSpec) -> tuple[list[Path], list[str]]:
    """Entries of an old plan at `root` that the new spec does not keep, and the member
    names it keeps (same `member.json`). Raises when something there is not ours."""
    keep = {m.name: member_record(m) for m in new.members()}
    worlds = {wid: cfg.to_dict() for wid, (cfg, _) in new.worlds().items()}
    corpora = {cid: (worlds[wid], None if rule is None else rule.to_dict())
               for cid, (wid, _, rule) in new.corpora().items()}
    stale, kept = [], []
    for entry in sorted(root.iterdir()):
        if entry.name in (SPEC_FILE, COMMANDS_FILE) or entry.name.startswith("."):
            continue
        if entry.name == JOBS_DIR and entry.is_dir() and not entry.is_symlink():
            continue  # the executor's job records and logs: kept (history of the plan)
        if entry.is_file() and not entry.is_symlink() and any(
                fnmatch.fnmatchcase(entry.name, pat) for pat in GATHERED):
            stale.append(entry)  # reports made from members that may go
            continue
        if entry.name == WORLDS_DIR and entry.is_dir():
            for world in sorted(entry.iterdir()):
                if world.name.startswith("."):
                    continue
                if world.is_dir() and not any(world.iterdir()):
                    stale.append(world)
                    continue
                check_replaceable(world, "corpus")
                manifest = _read_json(world / "corpus.json", "corpus manifest")
                rule = (manifest.get("subset") or {}).get("rule")
                if (manifest.get("world_config"), rule) != corpora.get(world.name):
                    stale.append(world)
            continue
        if not (entry.is_dir() and _owned_member_dir(entry)):
            raise ValueError(f"refusing to overwrite the plan {root}: it holds {entry.name}, "
                             "which no sweep plan writes; move it out first")
        record = _read_json(entry / MEMBER_FILE, "member file")
        if keep.get(entry.name) == record:
            kept.append(entry.name)
        else:
            stale.append(entry)
    return stale, kept


def plan_sweep(spec: SweepSpec, out: str | Path, *, overwrite: bool = False) -> PlanOutcome:
    """Write the plan of `spec` under `out`: `sweep_spec.json`, a member directory with its
    `member.json` per member, and `commands.txt`. Planning the same spec again changes
    nothing (and writes what a killed plan left out).

    Args:
        spec: the sweep.
        out: the plan directory (new, empty, or a plan of the same spec).
        overwrite: replace a plan of another spec: members whose config is unchanged are
            kept with their runs; the others, and worlds no member uses, are deleted.

    Raises:
        FileExistsError: `out` holds a plan of another spec and not `overwrite`.
        ValueError: `out` holds something that is not a plan of ours.
    """
    root = Path(out)
    check_writable(root / SPEC_FILE)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file; choose a directory for the plan")
    status, kept, removed = "new", [], []
    if root.is_dir() and any(root.iterdir()):
        if not (root / SPEC_FILE).is_file():
            raise ValueError(f"--out {root} is not empty and is not a sweep plan (no "
                             f"{SPEC_FILE}); choose a new or empty directory")
        try:
            old = _read_json(root / SPEC_FILE, "sweep spec").get("spec", {})
        except ValueError:
            if not overwrite:
                raise
            old = {}  # damaged: replaced, its member directories checked one by one
        old_id = {k: v for k, v in old.items() if k not in ("name", "description")}
        if old_id == spec.identity():
            status = "unchanged"
        elif not overwrite:
            diffs = _diff(old_id, spec.identity())
            raise FileExistsError(f"{root} holds the plan of another spec ("
                                  + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else "")
                                  + "); pass --overwrite to replace it (members whose config "
                                  "is unchanged keep their runs) or choose another --out")
        else:
            stale, kept = _stale(root, spec)
            status = "replaced"
            for path in stale:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path.name if path.parent == root else f"{WORLDS_DIR}/{path.name}")
    plan = Plan(root, spec)
    if status != "unchanged":
        write_json_atomic(root / SPEC_FILE, spec_record(spec))
    for member in plan.members():
        path = plan.member_dir(member) / MEMBER_FILE
        if status == "unchanged" and path.is_file():
            check_member_dir(plan, member)  # a directory copied in from another spec
        elif not (status == "replaced" and member.name in kept):
            write_json_atomic(path, member_record(member))
    commands = "".join(line + "\n" for line in command_lines(plan))
    cpath = root / COMMANDS_FILE
    if not cpath.is_file() or cpath.read_text() != commands:
        write_text_atomic(cpath, commands)
    return PlanOutcome(plan, status, tuple(kept), tuple(removed))
