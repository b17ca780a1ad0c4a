"""Train a planned sweep here: the worlds first, then the members that are not finished, in
order, with the project's trainer (`workbench.training.trainer.train`).

Resumable at any instant: a finished member (its last checkpoint exists) is never trained
again; a member killed mid-training continues from its newest checkpoint, exactly as
`workbench train --resume` does. Locks (`fcntl.flock`, released when a process dies) keep two
processes from building one world or training one member at the same time, so the lines of
`commands.txt` may run in parallel.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sweep.member import Member
from sweep.plan import Plan, check_member_dir, member_state
from workbench.layout import CHECKPOINTS_DIR, RUN_JSON, TRAINING_FIGURE, step_of
from workbench.models.checkpoints import list_checkpoints, step_dir_name
from workbench.training.trainer import train
from workbench.world import build_corpus
from workbench.world.subset import Drop, write_subset

logger = logging.getLogger(__name__)
Log = Callable[[str], None]  # receives one line per event
OnStep = Callable[[Member, int, float], None]
TRAIN_LOCK = ".train.lock"  # held (fcntl.flock) by the process training a member


@dataclass(frozen=True)
class SweepRunConfig:
    """How `run_sweep` trains.

    Args:
        device: `auto`, `cpu`, `cuda` or `cuda:N` (bf16 autocast on CUDA).
        members: names of the members to train (empty: every member).
        progress: the trainer's progress bar.
    """

    device: str = "auto"
    members: tuple[str, ...] = ()
    progress: bool = True


@dataclass(frozen=True)
class MemberResult:
    """One member after `run_sweep`: `status` is `trained` (from step 0), `resumed`,
    `finished` (it was already) or `busy` (another process is training it)."""

    name: str
    status: str
    steps: int
    val_loss: float
    seconds: float
    tokens_per_s: float


class Busy(Exception):
    """Another process holds the lock."""


@contextmanager
def _lock(path: Path, wait: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise Busy(str(path)) from exc
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock file `path` (False when it does not exist)."""
    if not path.is_file():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_world(plan: Plan, world_id: str, *, progress: bool = False,
                 drops: bool = True) -> tuple[Path, bool]:
    """The corpus `world_id`, built when missing (once, under a lock). Returns its directory
    and whether anything was built now.

    Args:
        plan: the plan.
        world_id: a world of the plan (`world`, `world_repeat_words0.1`), or a subset of one
            that members with a drop train on (`world_drop-NAME`: its world is built first).
        progress: the world builder's progress bar.
        drops: with a world's id, also build the subsets of it the plan's members train on
            (what `workbench sweep world` does); `False` builds the world alone.

    Raises:
        ValueError: an unknown id, a directory built with another config or rule, or a drop
            rule naming documents the world lacks.
    """
    corpora = plan.spec.corpora()
    if world_id not in corpora:
        raise ValueError(f"{plan.root} has no world {world_id!r}; its worlds: "
                         f"{', '.join(corpora)}")
    base_id, name, rule = corpora[world_id]
    out, built = _ensure_base(plan, base_id, progress)
    if rule is not None:
        path, now = _ensure_subset(plan, world_id, name, rule, out)
        return path, built or now
    if drops:
        for cid, (wid, sub_name, sub_rule) in corpora.items():
            if wid == base_id and sub_rule is not None:
                built = _ensure_subset(plan, cid, sub_name, sub_rule, out)[1] or built
    return out, built


def check_world(plan: Plan, world_id: str) -> Path:
    """The corpus `world_id` of the plan, checked to be the one its members train on: built
    with the plan's world config (and, for a subset, the plan's drop rule). `sweep run`
    trains on it and `sweep analyze` measures on it, so a world replaced by hand (a `world
    build --overwrite` with other settings) is refused before either.

    Raises:
        ValueError: the world is missing, unreadable or another one; naming the fix.
    """
    base_id, _, rule = plan.spec.corpora()[world_id]
    cfg, _ = plan.spec.worlds()[base_id]
    out = plan.world_dir(world_id)
    rebuild = (f"move {out} away and run `workbench sweep world {plan.root}` to build the "
               "plan's own again")
    if not out.exists():
        raise ValueError(f"world {out} is missing; run `workbench sweep world {plan.root}` to "
                         "build it again")
    try:
        manifest = json.loads((out / "corpus.json").read_text())
        recorded = (manifest.get("world_config"), (manifest.get("subset") or {}).get("rule"))
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"world {out} cannot be read ({type(exc).__name__}); {rebuild}"
                         ) from None
    if recorded != (cfg.to_dict(), None if rule is None else rule.to_dict()):
        raise ValueError(f"world {out} is not the one the plan's members train on (built "
                         f"with another world config or drop rule); {rebuild}")
    return out


def _ensure_subset(plan: Plan, cid: str, name: str, rule: Drop, base: Path
                   ) -> tuple[Path, bool]:
    """The subset corpus `cid` of the world at `base`, written when missing, under its own
    lock (taken after the world's is released: no lock is held while waiting for another)."""
    out = plan.world_dir(cid)
    with _lock(out.parent / f".{cid}.lock", wait=True):
        try:
            subset = write_subset(base, out, rule, name=name)
        except ValueError as exc:
            raise ValueError(f"world {cid}: {exc} (plan again with --overwrite: it deletes "
                             "stale worlds)") from exc
    if subset.built:
        logger.info("world %s: %d training documents (%d tokens) left out by drop %s", cid,
                    subset.n_docs_removed, subset.n_tokens_removed, name)
    return out, subset.built


def _ensure_base(plan: Plan, world_id: str, progress: bool) -> tuple[Path, bool]:
    cfg, tokens = plan.spec.worlds()[world_id]
    out = plan.world_dir(world_id)
    with _lock(out.parent / f".{world_id}.lock", wait=True):
        if (out / "corpus.json").is_file():
            check_world(plan, world_id)
            return out, False
        build_corpus(cfg, out, n_tokens_train=tokens, progress=progress)
        return out, True


def ensure_corpora(plan: Plan, members: list[Member], *, progress: bool = False,
                   log: Log = logger.info) -> None:
    """Build the corpora `members` train on (their worlds, and the subsets of those with a
    drop) that are missing, each once, logging each one built."""
    for cid in dict.fromkeys(m.corpus_id for m in members):
        out, built = ensure_world(plan, cid, progress=progress, drops=False)
        if built:
            log(f"world {cid}: built -> {out}")


def finished(plan: Plan, member: Member) -> bool:
    """Whether the member is trained to its last step with its training figure written
    (nothing left for `train_member` to do)."""
    return (member_state(plan, member) == "done"
            and (plan.run_dir(member) / TRAINING_FIGURE).exists())


def _final_val_loss(plan: Plan, member: Member) -> float:
    config = plan.run_dir(member) / CHECKPOINTS_DIR / step_dir_name(member.steps) / "config.json"
    value = json.loads(config.read_text()).get("val_loss")
    return float("nan") if value is None else float(value)


def train_member(plan: Plan, member: Member, *, device: str = "auto", progress: bool = True,
                 on_step: OnStep | None = None, lock: bool = True) -> MemberResult:
    """Train one member to its last step unless it is there already (resuming a started one).

    `lock=False` is for the ranks after the first of a data-parallel job (rank 0 holds the
    member's lock for all of them).

    Raises:
        ValueError: its directory was made by another spec.
        Busy: another process is training it.
    """
    check_member_dir(plan, member)
    run_dir = plan.run_dir(member)
    with _lock(plan.member_dir(member) / TRAIN_LOCK, wait=False) if lock else nullcontext():
        state = member_state(plan, member)
        if state == "done":
            if not (run_dir / TRAINING_FIGURE).exists():  # killed just before it
                world, _ = ensure_world(plan, member.corpus_id, drops=False)
                train(member.model, world, run_dir, member.train, device=device, resume=True,
                      progress=False)
            return MemberResult(member.name, "finished", member.steps,
                                _final_val_loss(plan, member), 0.0, float("nan"))
        world, _ = ensure_world(plan, member.corpus_id, drops=False)
        resume = (run_dir / RUN_JSON).is_file()
        if not resume and run_dir.is_dir():
            _clear_unstarted(run_dir)
        start = _resume_step(run_dir) if resume else 0
        hook = None if on_step is None else (lambda step, loss: on_step(member, step, loss))
        t0 = time.perf_counter()
        result = train(member.model, world, run_dir, member.train, device=device,
                       resume=resume, progress=progress, on_step=hook)
        seconds = time.perf_counter() - t0
    done = (result.steps - start) * member.train.batch_size * member.model.n_ctx
    return MemberResult(member.name, "resumed" if state == "started" else "trained",
                        result.steps, result.final_val_loss, seconds, done / max(seconds, 1e-9))


def _clear_unstarted(run_dir: Path) -> None:
    """A run directory without `run.json`: a run killed while creating it leaves at most
    temporary files (`.NAME.*`), which are removed; anything else is refused."""
    foreign = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
    if foreign:
        raise ValueError(f"{run_dir} holds {', '.join(sorted(foreign)[:5])} but no run.json, so "
                         "it is not a run of ours; move those files out and run the sweep again")
    for p in run_dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _resume_step(run_dir: Path) -> int:
    """The step a resumed run continues from: its newest checkpoint with a training state."""
    steps = [step_of(p) or 0 for p in list_checkpoints(run_dir)
             if (p / "train_state.pt").exists()]
    return max(steps, default=0)


def run_sweep(plan: Plan, cfg: SweepRunConfig = SweepRunConfig(), *,
              log: Log = logger.info, on_step: OnStep | None = None) -> list[MemberResult]:
    """Build the plan's missing worlds, then train its unfinished members in order.

    Args:
        plan: the plan (`sweep.plan.load_plan`).
        cfg: device, which members, progress bar.
        log: receives one line per event (the CLI prints them).
        on_step: called as `on_step(member, step, loss)` after each optimizer step (tests
            use it to kill a run at a chosen step).

    Raises:
        ValueError: an unknown member name, or a member directory made by another spec
            (checked for every member before any training).
    """
    members = [plan.member(n) for n in cfg.members] if cfg.members else plan.members()
    for member in members:
        check_member_dir(plan, member)
    ensure_corpora(plan, members, progress=cfg.progress, log=log)
    results = []
    for i, member in enumerate(members, 1):
        head = f"[{i}/{len(members)}] {member.name}"
        state = member_state(plan, member)
        if state != "done":
            log(f"{head}: {'resuming' if state == 'started' else 'training'} "
                f"(N={member.n_params:,}, D={member.tokens:,}, C={member.compute:.2e})")
        try:
            result = train_member(plan, member, device=cfg.device, progress=cfg.progress,
                                  on_step=on_step)
        except Busy:
            log(f"{head}: another process is training it; skipped")
            results.append(MemberResult(member.name, "busy", 0, float("nan"), 0.0,
                                        float("nan")))
            continue
        if result.status == "finished":
            log(f"{head}: finished already (val loss {result.val_loss:.3f}); skipped")
        else:
            log(f"{head}: {result.status} to step {result.steps} in {result.seconds:.0f} s, "
                f"val loss {result.val_loss:.3f}, {result.tokens_per_s:,.0f} tokens/s")
        results.append(result)
    return results
