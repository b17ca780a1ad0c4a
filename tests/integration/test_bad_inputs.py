"""Bad input to every subcommand: one clear line, exit status 2, no traceback, and no file
that existed before is changed (the whole tree is hashed before and after each case).

Each case builds what it needs in its own workspace (damaged copies of the session's corpus,
run and checkpoint; foreign files) and runs `workbench.cli.core.main` in-process.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from workbench.cli.core import main
from workbench.models.checkpoints import list_checkpoints
from workbench.training.trainer import TrainResult


@dataclass(frozen=True)
class Assets:
    corpus: Path  # the session's world corpus (read-only)
    run: Path  # the session's tiny run (read-only)
    hf: Path  # a tiny Hugging Face GPT-2 directory (read-only)
    acts: Path  # tiny's word-final probe activations of the val split
    text: Path  # a small real-text corpus (BPE, larger vocabulary than tiny's)


@pytest.fixture(scope="module")
def assets(world_corpus: Path, tiny_run: TrainResult, hf_gpt2_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Assets:
    from probe.rows import store_config
    from workbench.cache.store import cache_activations
    from workbench.models.loader import load
    from workbench.world import build_text_corpus, load_corpus

    base = tmp_path_factory.mktemp("bad-assets")
    acts = cache_activations(load(tiny_run.run_dir), load_corpus(world_corpus),
                             store_config("val", 1500), base / "acts.h5",
                             model_ref=str(tiny_run.run_dir), progress=False)
    src = base / "text.txt"
    src.write_text("\n\n".join(f"paragraph {i}: the quick brown fox jumps over the lazy dog "
                               f"number {i} while {i * 7} birds sing." for i in range(300)))
    text = build_text_corpus([src], base / "text", vocab_size=600, progress=False)
    return Assets(world_corpus, tiny_run.run_dir, hf_gpt2_dir, acts, Path(text))


# ---- building blocks of the cases ---------------------------------------------------------


def ckpt_of(a: Assets) -> Path:
    return list_checkpoints(a.run)[-1]


def copy_ckpt(ws: Path, a: Assets) -> Path:
    return Path(shutil.copytree(ckpt_of(a), ws / "ckpt"))


def copy_corpus(ws: Path, a: Assets, name: str = "world") -> Path:
    return Path(shutil.copytree(a.corpus, ws / name))


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """`change` the JSON object in `path` in place."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip(path: Path, start: float = 0.5, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * start)
    for k in range(i, min(i + n, len(data))):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def notes(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_text("my own notes, not made by workbench\n")
    return d


def foreign_acts(ws: Path, a: Assets) -> Path:
    """tiny's activation file, as if another model of the same shape had made it."""
    path = Path(shutil.copy(a.acts, ws / "other.h5"))
    with h5py.File(path, "r+") as f:
        f.attrs["model_checksum"] = "0" * 64
    return path


def damaged_acts(ws: Path, a: Assets) -> Path:
    """tiny's activation file with 4 KiB of flipped bytes inside its first dataset."""
    path = Path(shutil.copy(a.acts, ws / "damaged.h5"))
    with h5py.File(path, "r") as f:
        offset = f["blocks.1.hook_resid_post"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    for k in range(offset + 4096, offset + 8192):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def big_vocab(ws: Path, a: Assets) -> Path:
    """The world corpus re-labelled with a vocabulary larger than tiny's embedding."""
    corpus = copy_corpus(ws, a, "big")
    edit_json(corpus / "corpus.json", lambda m: m.update(vocab_size=100_000))
    return corpus


Setup = Callable[[Path, Assets], list[str]]
CASES: list[tuple[str, Setup, str]] = []


def case(name: str, match: str) -> Callable[[Setup], Setup]:
    def add(setup: Setup) -> Setup:
        CASES.append((name, setup, match))
        return setup
    return add


def simple(name: str, match: str, argv: Callable[[Path, Assets], list[str]]) -> None:
    CASES.append((name, argv, match))


def flag_cases(prefix: str, args: Callable[..., list[str]],
               table: list[tuple[str, str, str, str]]) -> None:
    """One case per (name, flag, value, match): `args(ws, a, flag, value)` must fail."""
    for name, flag, value, match in table:
        simple(f"{prefix}-{name}", match,
               lambda ws, a, flag=flag, value=value: args(ws, a, flag, value))


# ---- world build ---------------------------------------------------------------------------
simple("build-n-people-0", r"--n-people: 0 is out of range",
       lambda ws, a: ["world", "build", "--n-people", "0", "--out", str(ws / "w")])
simple("build-exposure-ratio-below-1", r"--exposure-ratio: 0.5 is out of range; pass a number "
       r">= 1.0", lambda ws, a: ["world", "build", "--exposure-ratio", "0.5", "--out",
                                 str(ws / "w")])
simple("build-country-stated-not-a-share", r"--country-stated: 2.0 is out of range",
       lambda ws, a: ["world", "build", "--country-stated", "2", "--out", str(ws / "w")])
simple("build-tokens-negative", r"--tokens: -5 is not a positive integer",
       lambda ws, a: ["world", "build", "--tokens", "-5", "--out", str(ws / "w")])
simple("build-tokens-text", r"--tokens: 'abc' is not an integer",
       lambda ws, a: ["world", "build", "--tokens", "abc", "--out", str(ws / "w")])
simple("build-seed-negative", r"--seed: -1 is out of range",
       lambda ws, a: ["world", "build", "--seed", "-1", "--out", str(ws / "w")])
simple("build-vocab-tiny", r"--vocab-size: 10 is out of range",
       lambda ws, a: ["world", "build", "--text", "x.txt", "--vocab-size", "10"])
simple("build-text-missing", r"text file .*missing\.txt not found",
       lambda ws, a: ["world", "build", "--text", str(ws / "missing.txt"), "--out",
                      str(ws / "t")])


@case("build-text-binary", r"not UTF-8 text|binary file")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "blob.txt").write_bytes(bytes(range(256)) * 64)
    return ["world", "build", "--text", str(ws / "blob.txt"), "--out", str(ws / "t")]


@case("build-text-empty", r"text files are empty")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "empty.txt").write_text("  \n\n ")
    return ["world", "build", "--text", str(ws / "empty.txt"), "--out", str(ws / "t")]


simple("build-tokenizer-without-text", r"--tokenizer .* without --text",
       lambda ws, a: ["world", "build", "--tokenizer", str(a.hf), "--out", str(ws / "w")])


@case("build-overwrite-foreign-dir", r"refusing to overwrite .*no corpus\.json")
def _(ws: Path, a: Assets) -> list[str]:
    return ["world", "build", "--out", str(notes(ws / "mine")), "--overwrite", "--tokens",
            "2000"]


@case("build-overwrite-corpus-with-notes", r"refusing to overwrite .*holds notes\.txt")
def _(ws: Path, a: Assets) -> list[str]:
    return ["world", "build", "--out", str(notes(copy_corpus(ws, a))), "--overwrite",
            "--tokens", "2000"]


@case("build-out-is-a-file", r"exists and is not a directory")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "file").write_text("x")
    return ["world", "build", "--out", str(ws / "file"), "--tokens", "2000"]


@case("build-text-inside-out", r"contains the input --text")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "out").mkdir()
    (ws / "out" / "a.txt").write_text("some text\n\nmore text\n")
    return ["world", "build", "--text", str(ws / "out" / "a.txt"), "--out", str(ws / "out"),
            "--overwrite"]


simple("build-existing-no-overwrite", r"is not empty; pass overwrite",
       lambda ws, a: ["world", "build", "--out", str(copy_corpus(ws, a)), "--tokens", "2000"])


@case("build-broken-tokenizer", r"tokenizer .* is damaged")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "a.txt").write_text("some text\n\nmore text\n")
    (ws / "tok.json").write_text('{"version": ')
    return ["world", "build", "--text", str(ws / "a.txt"), "--tokenizer", str(ws / "tok.json"),
            "--out", str(ws / "t")]


# ---- world retokenize ----------------------------------------------------------------------
@case("retok-out-is-corpus", r"the output .* is the input --corpus")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    return ["world", "retokenize", "--corpus", str(c), "--tokenizer", str(a.hf), "--out",
            str(c), "--splits", "val", "--overwrite"]


@case("retok-out-inside-corpus", r"lies inside the input --corpus")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    return ["world", "retokenize", "--corpus", str(c), "--tokenizer", str(a.hf), "--out",
            str(c / "sub")]


simple("retok-corpus-missing", r"no corpus at",
       lambda ws, a: ["world", "retokenize", "--corpus", str(ws / "nope"), "--tokenizer",
                      str(a.hf), "--out", str(ws / "o")])
simple("retok-tokenizer-missing", r"no tokenizer at|tokenizer .* not found",
       lambda ws, a: ["world", "retokenize", "--corpus", str(a.corpus), "--tokenizer",
                      str(ws / "nope.json"), "--out", str(ws / "o")])


@case("retok-tokenizer-broken", r"tokenizer .* is damaged")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "tok.json").write_bytes(b"\x00\x01garbage")
    return ["world", "retokenize", "--corpus", str(a.corpus), "--tokenizer",
            str(ws / "tok.json"), "--out", str(ws / "o")]


simple("retok-unknown-split", r"unknown split 'nope'",
       lambda ws, a: ["world", "retokenize", "--corpus", str(a.corpus), "--tokenizer",
                      str(a.hf), "--out", str(ws / "o"), "--splits", "nope"])
simple("retok-text-corpus", r"real-text corpus without labels",
       lambda ws, a: ["world", "retokenize", "--corpus", str(a.text), "--tokenizer", str(a.hf),
                      "--out", str(ws / "o")])


@case("retok-manifest-list", r"corpus\.json has schema 'list'")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    (c / "corpus.json").write_text("[1, 2, 3]")
    return ["world", "retokenize", "--corpus", str(c), "--tokenizer", str(a.hf), "--out",
            str(ws / "o")]


@case("retok-manifest-binary", r"corpus file .*corpus\.json is damaged")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    (c / "corpus.json").write_bytes(b"\xff\xfe\x00garbage")
    return ["world", "retokenize", "--corpus", str(c), "--tokenizer", str(a.hf), "--out",
            str(ws / "o")]


# ---- train ---------------------------------------------------------------------------------
def train_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny", "--corpus", str(a.corpus), "--run", str(ws / "r"),
            "--no-progress", *extra]


flag_cases("train", train_args, [
    ("steps-0", "--steps", "0", r"--steps: 0 is out of range"),
    ("steps-huge", "--steps", "1000000000000", r"--steps: .* is out of range"),
    ("steps-text", "--steps", "10^12", r"--steps: '10\^12' is not an integer"),
    ("lr-nan", "--lr", "nan", r"--lr: nan is not a finite number"),
    ("lr-inf", "--lr", "inf", r"--lr: inf is not a finite number"),
    ("lr-zero", "--lr", "0", r"--lr: 0.0 is out of range"),
    ("lr-five", "--lr", "5", r"--lr: 5.0 is out of range"),
    ("batch-0", "--batch-size", "0", r"--batch-size: 0 is not a positive integer"),
    ("preset-unknown", "--preset", "huge", r"--preset: 'huge' is not one of"),
    ("device-unknown", "--device", "gpu", r"--device: 'gpu' is not a device"),
    ("seed-negative", "--seed", "-3", r"--seed: -3 is out of range"),
])
simple("train-batch-huge", r"--batch-size 100000000 needs about .* of memory",
       lambda ws, a: train_args(ws, a, "--batch-size", "100000000"))
simple("train-resume-and-overwrite", r"--resume and --overwrite together",
       lambda ws, a: train_args(ws, a, "--resume", "--overwrite"))
simple("train-resume-missing", r"does not exist|nothing to resume|no run",
       lambda ws, a: train_args(ws, a, "--resume"))


@case("train-corpus-inside-run-overwrite", r"the output .* contains the input --corpus")
def _(ws: Path, a: Assets) -> list[str]:
    d = notes(ws / "d")
    shutil.copytree(a.corpus, d / "world")
    return ["train", "--preset", "tiny", "--run", str(d), "--corpus", str(d / "world"),
            "--overwrite", "--no-progress"]


@case("train-overwrite-foreign-dir", r"refusing to overwrite .*no run\.json")
def _(ws: Path, a: Assets) -> list[str]:
    return ["train", "--preset", "tiny", "--corpus", str(a.corpus), "--run",
            str(notes(ws / "mine")), "--overwrite", "--no-progress"]


@case("train-overwrite-run-with-notes", r"refusing to overwrite .*holds notes\.txt")
def _(ws: Path, a: Assets) -> list[str]:
    run = notes(Path(shutil.copytree(a.run, ws / "r")))
    return ["train", "--preset", "tiny", "--corpus", str(a.corpus), "--run", str(run),
            "--overwrite", "--no-progress"]


@case("train-existing-run", r"is not empty; pass --resume")
def _(ws: Path, a: Assets) -> list[str]:
    run = shutil.copytree(a.run, ws / "r")
    return ["train", "--preset", "tiny", "--corpus", str(a.corpus), "--run", str(run),
            "--no-progress"]


simple("train-corpus-missing", r"no corpus at",
       lambda ws, a: ["train", "--preset", "tiny", "--corpus", str(ws / "nope"), "--run",
                      str(ws / "r"), "--no-progress"])


@case("train-corpus-truncated-tokens", r"corpus file .*train\.tokens\.npy is damaged")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    truncate(c / "train.tokens.npy", 0.3)
    return ["train", "--preset", "tiny", "--corpus", str(c), "--run", str(ws / "r"),
            "--no-progress"]


@case("train-manifest-missing-keys", r"lacks or mangles the fields")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    edit_json(c / "corpus.json", lambda m: m.pop("files"))
    return ["train", "--preset", "tiny", "--corpus", str(c), "--run", str(ws / "r"),
            "--no-progress"]


# ---- eval ----------------------------------------------------------------------------------
simple("eval-model-missing", r"does not exist",
       lambda ws, a: ["eval", "--model", str(ws / "nope"), "--no-progress"])


@case("eval-model-no-model", r"holds no model")
def _(ws: Path, a: Assets) -> list[str]:
    return ["eval", "--model", str(notes(ws / "empty")), "--corpus", str(a.corpus),
            "--no-progress"]


def damaged_ckpt(change: Callable[[Path], None]) -> Setup:
    def setup(ws: Path, a: Assets) -> list[str]:
        ck = copy_ckpt(ws, a)
        change(ck)
        return ["eval", "--model", str(ck), "--corpus", str(a.corpus), "--no-progress"]
    return setup


CASES += [
    ("eval-config-list", damaged_ckpt(lambda ck: (ck / "config.json").write_text("[]")),
     r"config .* holds a list"),
    ("eval-config-no-model", damaged_ckpt(lambda ck: edit_json(
        ck / "config.json", lambda c: c.pop("model"))), r"has no valid model config"),
    ("eval-config-wrong-type", damaged_ckpt(lambda ck: edit_json(
        ck / "config.json", lambda c: c["model"].update(n_layers="four"))),
     r"has no valid model config"),
    ("eval-config-invalid-json", damaged_ckpt(lambda ck: (ck / "config.json").write_text(
        '{"schema": ')), r"checkpoint config .* is corrupt"),
    ("eval-config-utf8", damaged_ckpt(lambda ck: (ck / "config.json").write_bytes(
        b"\xff\xfe{}")), r"checkpoint config .* is corrupt"),
    ("eval-tokenizer-broken", damaged_ckpt(lambda ck: (ck / "tokenizer.json").write_text(
        "not a tokenizer")), r"does not match its checksum|tokenizer .* is damaged"),
    ("eval-weights-truncated", damaged_ckpt(lambda ck: truncate(ck / "model.safetensors")),
     r"does not match its checksum"),
    ("eval-weights-flipped", damaged_ckpt(lambda ck: flip(ck / "model.safetensors")),
     r"does not match its checksum"),
]


@case("eval-weights-foreign", r"does not match its checksum")
def _(ws: Path, a: Assets) -> list[str]:
    ck = copy_ckpt(ws, a)
    shutil.copy(list_checkpoints(a.run)[0] / "model.safetensors", ck / "model.safetensors")
    return ["eval", "--model", str(ck), "--corpus", str(a.corpus), "--no-progress"]


simple("eval-corpus-bigger-vocab", r"vocabulary of 100000 tokens, more than the model's",
       lambda ws, a: ["eval", "--model", str(a.run), "--corpus", str(big_vocab(ws, a)),
                      "--out", str(ws / "e.json"), "--no-progress"])


@case("eval-out-foreign-file", r"refusing to overwrite .*not a report made by workbench")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "mine.json").write_text('{"my": "data"}')
    return ["eval", "--model", str(a.run), "--corpus", str(a.corpus), "--out",
            str(ws / "mine.json"), "--no-progress"]


simple("eval-device-cuda", r"CUDA is not available",
       lambda ws, a: ["eval", "--model", str(a.run), "--device", "cuda", "--out",
                      str(ws / "e.json"), "--no-progress"])
simple("eval-seed-text", r"--seed: 'x' is not an integer",
       lambda ws, a: ["eval", "--model", str(a.run), "--seed", "x"])
simple("eval-out-is-corpus", r"the output .* is the input --corpus",
       lambda ws, a: ["eval", "--model", str(a.run), "--corpus", str(a.corpus), "--out",
                      str(a.corpus)])


# ---- cache ---------------------------------------------------------------------------------
def cache_args(ws: Path, a: Assets, *extra: str, out: str = "a.h5") -> list[str]:
    return ["cache", "--model", str(a.run), "--corpus", str(a.corpus), "--hooks",
            "blocks.0.hook_resid_post", "--max-tokens", "500", "--no-progress", "--out",
            str(ws / out), *extra]


simple("cache-unknown-hook", r"no hook|matches no hook|unknown hook",
       lambda ws, a: ["cache", "--model", str(a.run), "--corpus", str(a.corpus), "--hooks",
                      "blocks.9.nonsense", "--out", str(ws / "a.h5"), "--no-progress"])
simple("cache-unknown-split", r"--split 'nope': corpus at .* has the splits",
       lambda ws, a: cache_args(ws, a, "--split", "nope"))
flag_cases("cache", cache_args, [
    ("positions", "--positions", "middle", r"--positions: 'middle' is not one of"),
    ("dtype", "--dtype", "float64", r"--dtype: 'float64' is not one of"),
    ("compression", "--compression", "zip", r"--compression: 'zip' is not one of"),
    ("batch-0", "--batch-size", "0", r"--batch-size: 0 is not a positive integer"),
    ("max-tokens-0", "--max-tokens", "0", r"--max-tokens: 0 is not a positive integer"),
])
simple("cache-batch-huge", r"--batch-size 100000000 needs about .* of memory",
       lambda ws, a: cache_args(ws, a, "--batch-size", "100000000"))
simple("cache-resume-and-overwrite", r"--resume and --overwrite together",
       lambda ws, a: cache_args(ws, a, "--resume", "--overwrite"))
simple("cache-out-is-corpus", r"the output .* is the input --corpus",
       lambda ws, a: ["cache", "--model", str(a.run), "--corpus", str(a.corpus), "--hooks",
                      "blocks.0.hook_resid_post", "--out", str(a.corpus)])
simple("cache-out-inside-corpus", r"lies inside the input --corpus",
       lambda ws, a: ["cache", "--model", str(a.run), "--corpus", str(a.corpus), "--hooks",
                      "blocks.0.hook_resid_post", "--out", str(a.corpus / "acts.h5")])


@case("cache-overwrite-foreign-file", r"refusing to overwrite .*not an activation file made")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "a.h5").write_text("my data")
    return cache_args(ws, a, "--overwrite")


@case("cache-existing-no-overwrite", r"already exists; pass --overwrite")
def _(ws: Path, a: Assets) -> list[str]:
    shutil.copy(a.acts, ws / "a.h5")
    return cache_args(ws, a)


simple("cache-corpus-bigger-vocab", r"vocabulary of 100000 tokens, more than the model's",
       lambda ws, a: ["cache", "--model", str(a.run), "--corpus", str(big_vocab(ws, a)),
                      "--hooks", "blocks.0.hook_resid_post", "--out", str(ws / "a.h5"),
                      "--no-progress"])


@case("cache-labels-truncated", r"corpus file .*val\.labels\.npz is damaged")
def _(ws: Path, a: Assets) -> list[str]:
    c = copy_corpus(ws, a)
    truncate(c / "val.labels.npz", 0.4)
    return ["cache", "--model", str(a.run), "--corpus", str(c), "--hooks",
            "blocks.0.hook_resid_post", "--chunk", "--out", str(ws / "a.h5"), "--no-progress"]


@case("cache-model-flipped", r"does not match its checksum")
def _(ws: Path, a: Assets) -> list[str]:
    ck = copy_ckpt(ws, a)
    flip(ck / "model.safetensors")
    return ["cache", "--model", str(ck), "--corpus", str(a.corpus), "--hooks",
            "blocks.0.hook_resid_post", "--out", str(ws / "a.h5"), "--no-progress"]


# ---- induction -----------------------------------------------------------------------------
def ind_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["induction", "--model", str(a.run), "--out", str(ws / "i.json"), "--no-progress",
            *extra]


flag_cases("induction", ind_args, [
    ("n-seqs-0", "--n-seqs", "0", r"--n-seqs: 0 is out of range"),
    ("min-score-2", "--min-score", "2", r"--min-score: 2.0 is out of range"),
    ("min-ablation-negative", "--min-ablation", "-1", r"--min-ablation: -1.0 is out of range"),
    ("checkpoints-text", "--checkpoints", "foo", r"--checkpoints: 'foo'"),
    ("device-text", "--device", "tpu", r"--device: 'tpu' is not a device"),
])
simple("induction-checkpoint-absent", r"no checkpoint at step\(s\) \[999999\]",
       lambda ws, a: ind_args(ws, a, "--checkpoints", "999999"))
simple("induction-checkpoints-hf", r"is not a run of ours",
       lambda ws, a: ["induction", "--model", str(a.hf), "--checkpoints", "all", "--out",
                      str(ws / "i.json"), "--no-progress"])
simple("induction-corpus-missing", r"no corpus at .*nope \(.*corpus.json not found\); run "
       r"`workbench world build",
       lambda ws, a: ind_args(ws, a, "--checkpoints", "all", "--corpus", str(ws / "nope")))


@case("induction-out-foreign-file", r"refusing to overwrite .*not a report made by workbench")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "i.json").write_text("precious")
    return ind_args(ws, a, "--overwrite")


@case("induction-out-exists", r"exists; pass --overwrite")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "i.json").write_text('{"schema": "workbench.induction/1"}')
    return ind_args(ws, a)


# ---- circuit -------------------------------------------------------------------------------
def circ_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["circuit", "--model", str(a.run), "--out", str(ws / "c.json"), "--no-progress",
            "--n-pairs", "4", *extra]


flag_cases("circuit", circ_args, [
    ("task-unknown", "--task", "induction,ioi", r"--task: ioi not among induction, facts"),
    ("method-unknown", "--method", "acdc", r"--method: acdc not among exact, attribution"),
    ("ig-steps-0", "--ig-steps", "0", r"--ig-steps: 0 is out of range"),
    ("truth-fraction-0", "--truth-fraction", "0", r"--truth-fraction: 0.0 is out of range"),
    ("top-k-0", "--top-k", "0", r"--top-k: 0 is out of range"),
])
simple("circuit-top-k-above-graph", r"--top-k 100000 is more than the graph's \d+ edges; "
       r"pass at most", lambda ws, a: circ_args(ws, a, "--task", "induction", "--top-k",
                                                "100000"))
simple("circuit-two-rules", r"argument --threshold: not allowed with argument --top-k",
       lambda ws, a: circ_args(ws, a, "--top-k", "3", "--threshold", "0.1"))
simple("circuit-node-method-first", r"`attribution` scores nodes only; put an edge method",
       lambda ws, a: circ_args(ws, a, "--method", "attribution,eap", "--top-k", "3"))
simple("circuit-hf-facts-no-corpus", r"task\(s\) facts are built from a world corpus; pass "
       r"--corpus",
       lambda ws, a: ["circuit", "--model", str(a.hf), "--task", "facts", "--out",
                      str(ws / "c.json"), "--no-progress"])
simple("circuit-compare-missing", r"model reference .*nope' does not exist",
       lambda ws, a: circ_args(ws, a, "--task", "induction", "--compare", str(ws / "nope")))


# ---- probe ---------------------------------------------------------------------------------
def probe_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["probe", "--model", str(a.run), "--corpus", str(a.corpus), "--tasks", "animacy",
            "--max-tokens", "1500", "--out", str(ws / "p.json"), "--no-progress", *extra]


flag_cases("probe", probe_args, [
    ("l2-nan", "--l2", "nan", r"--l2: 'nan': nan is not a finite number"),
    ("l2-negative", "--l2", "-1", r"--l2: '-1': -1.0 is out of range"),
    ("l2-text", "--l2", "abc", r"--l2: 'abc'"),
    ("tasks-unknown", "--tasks", "nope", r"--tasks: unknown probe task 'nope'"),
    ("holdout-time", "--holdout", "time", r"--holdout: 'time' is not one of group, random"),
    ("max-examples-0", "--max-examples", "0", r"--max-examples: 0 is out of range"),
    ("folds-1", "--folds", "1", r"--folds: 1 is out of range"),
    ("layers-text", "--layers", "a,b", r"--layers: 'a,b': 'a' is not an integer"),
    ("probe-kind", "--probe", "svm", r"--probe: 'svm' is not one of linear, mlp"),
])
simple("probe-acts-foreign", r"was made by another model",
       lambda ws, a: probe_args(ws, a, "--acts", str(foreign_acts(ws, a))))
simple("probe-acts-damaged", r"activation file .* is damaged",
       lambda ws, a: probe_args(ws, a, "--acts", str(damaged_acts(ws, a))))


@case("probe-acts-not-hdf5", r"is not a readable HDF5 file")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "notes.h5").write_text("just text")
    return probe_args(ws, a, "--acts", str(ws / "notes.h5"))


@case("probe-acts-other-positions", r"caches positions 'all'; probes read word-final rows")
def _(ws: Path, a: Assets) -> list[str]:
    path = Path(shutil.copy(a.acts, ws / "all.h5"))
    with h5py.File(path, "r+") as f:
        f.attrs["positions"] = "all"
    return probe_args(ws, a, "--acts", str(path), "--split", "val")


simple("probe-acts-other-split", r"holds the 'val' split, not --split 'test'",
       lambda ws, a: probe_args(ws, a, "--acts", str(a.acts), "--split", "test"))
simple("probe-text-corpus", r"real-text corpus",
       lambda ws, a: ["probe", "--model", str(a.run), "--corpus", str(a.text), "--out",
                      str(ws / "p.json"), "--no-progress"])
simple("probe-out-is-acts", r"the output .* is the input --acts",
       lambda ws, a: ["probe", "--model", str(a.run), "--acts", str(a.acts), "--out",
                      str(a.acts)])
simple("probe-acts-made-inside-corpus", r"the output .*new\.h5 lies inside the input --corpus",
       lambda ws, a: ["probe", "--model", str(a.run), "--acts", str(a.corpus / "new.h5"),
                      "--out", str(ws / "p.json")])  # the run's own corpus, by default
simple("eval-out-unwritable", r"cannot write /proc/nope/e.json: nothing can be created in /proc",
       lambda ws, a: ["eval", "--model", str(a.run), "--out", "/proc/nope/e.json",
                      "--no-progress"])
simple("probe-corpus-bigger-vocab", r"encoded with another tokenizer|vocabulary of 100000",
       lambda ws, a: probe_args(ws, a, "--corpus", str(big_vocab(ws, a))))

# ---- beliefs -------------------------------------------------------------------------------


def beliefs_args(ws: Path, a: Assets, *extra: str) -> list[str]:
    return ["beliefs", "--model", str(a.run), "--corpus", str(a.corpus), "--n", "2",
            "--method", "icl", "--n-trace", "0", "--out", str(ws / "b.json"), "--no-progress",
            *extra]


flag_cases("beliefs", beliefs_args, [
    ("method-unknown", "--method", "icl,foo",
     r"--method: foo not among icl, rome, memit, ft, steer"),
    ("n-0", "--n", "0", r"--n: 0 is out of range"),
    ("seeds-text", "--seeds", "a", r"--seeds: 'a': 'a' is not an integer"),
    ("layer-negative", "--layer", "-1", r"--layer: -1 is out of range"),
    ("trace-samples-0", "--trace-samples", "0", r"--trace-samples: 0 is out of range"),
])
simple("beliefs-layer-too-deep", r"layer.*99",
       lambda ws, a: beliefs_args(ws, a, "--method", "ft", "--layer", "99"))
simple("beliefs-facts-missing", r"fact list .* does not exist",
       lambda ws, a: beliefs_args(ws, a, "--facts", str(ws / "nope.json")))


@case("beliefs-facts-a-folder", r"fact list .* is a folder; pass --facts FILE.json")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "facts").mkdir()
    return beliefs_args(ws, a, "--facts", str(ws / "facts"))


@case("beliefs-facts-invalid-json", r"fact list .* is not valid JSON")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "f.json").write_text("{facts")
    return beliefs_args(ws, a, "--facts", str(ws / "f.json"))


@case("beliefs-facts-wrong-schema", r"has schema 'other/1'; expected 'workbench.facts/1'")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "f.json").write_text('{"schema": "other/1"}')
    return beliefs_args(ws, a, "--facts", str(ws / "f.json"))


@case("beliefs-facts-missing-fields", r"fact list .* lacks or mangles a field")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "f.json").write_text('{"schema": "workbench.facts/1", "facts": [{"subject": "x"}],'
                               ' "relations": {}}')
    return beliefs_args(ws, a, "--facts", str(ws / "f.json"))


@case("beliefs-probes-broken", r"probe report .* is not valid JSON")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "p.json").write_text("{")
    return beliefs_args(ws, a, "--probes", str(ws / "p.json"))


simple("beliefs-relations-unknown", r"relation",
       lambda ws, a: beliefs_args(ws, a, "--relations", "nope"))
@case("beliefs-out-is-facts", r"the output .* is the input --facts")
def _(ws: Path, a: Assets) -> list[str]:
    real = Path(__file__).resolve().parents[2] / "datasets/facts/real_facts.json"
    facts = Path(shutil.copy(real, ws / "facts.json"))
    return beliefs_args(ws, a, "--facts", str(facts), "--out", str(facts))

# ---- Hugging Face directories -------------------------------------------------------------
def damaged_hf(change: Callable[[Path], None], command: str = "info") -> Setup:
    def setup(ws: Path, a: Assets) -> list[str]:
        hf = Path(shutil.copytree(a.hf, ws / "hf"))
        change(hf)
        return [command, "--model", str(hf)] + (["--corpus", str(a.corpus), "--out",
                                                  str(ws / "e.json"), "--no-progress"]
                                                 if command == "eval" else [])
    return setup


CASES += [
    ("info-hf-weights-truncated", damaged_hf(lambda d: truncate(d / "model.safetensors")),
     r"Hugging Face directory .* cannot be loaded \(SafetensorError"),
    ("info-hf-unknown-model-type", damaged_hf(lambda d: edit_json(
        d / "config.json", lambda c: c.update(model_type="nonsense"))),
     r"Hugging Face directory .* cannot be loaded .*model type `nonsense`"),
    ("eval-hf-config-wrong-type", damaged_hf(lambda d: edit_json(
        d / "config.json", lambda c: c.update(n_layer="two")), "eval"),
     r"Hugging Face directory .* cannot be loaded .*n_layer|has a vocabulary of 416 tokens, "
     r"more than the model's"),  # (the corpus does not fit it either: refused first)
]


# ---- issue 37's classes: values accepted that cannot work, integrity of what is read ------
simple("train-run-empty", r"--run is empty; pass a path",
       lambda ws, a: ["train", "--preset", "tiny", "--corpus", str(a.corpus), "--run", ""])
simple("build-vocab-size-without-text", r"--vocab-size 100 without --text",
       lambda ws, a: ["world", "build", "--out", str(ws / "w"), "--vocab-size", "100"])
simple("retok-splits-empty", r"--splits: '' is empty",
       lambda ws, a: ["world", "retokenize", "--corpus", str(a.corpus), "--tokenizer",
                      str(a.hf), "--out", str(ws / "r"), "--splits", ""])
simple("induction-checkpoints-twice", r"'0,0,30' names step 0 twice",
       lambda ws, a: ind_args(ws, a, "--checkpoints", "0,0,30"))
simple("eval-device-map-with-device", r"--device 'cpu' with --device-map 'auto': pass one",
       lambda ws, a: ["eval", "--model", str(a.hf), "--device", "cpu", "--device-map", "auto",
                      "--out", str(ws / "e.json"), "--no-progress"])
for _name, _budget in (("negative", "0=-5GiB"), ("nan", "cpu=nanGiB"),
                       ("parsecs", "cpu=10parsecs")):
    simple(f"eval-max-memory-{_name}", r"is not a size; pass a positive number and a unit",
           lambda ws, a, b=_budget: ["eval", "--model", str(a.hf), "--device-map", "auto",
                                     "--max-memory", b, "--out", str(ws / "e.json")])
simple("eval-max-memory-twice", r"names device 0 twice",
       lambda ws, a: ["eval", "--model", str(a.hf), "--device-map", "auto", "--max-memory",
                      "0=1GiB,0=2GiB", "--out", str(ws / "e.json")])
simple("eval-hf-other-tokenizer", r"has a vocabulary of 416 tokens, more than the model's",
       lambda ws, a: ["eval", "--model", str(a.hf), "--corpus", str(a.corpus), "--out",
                      str(ws / "e.json"), "--no-progress"])
simple("info-hf-absurd-layer-count", r"has [\d,]+M parameters and needs about .* more than",
       damaged_hf(lambda d: edit_json(d / "config.json", lambda c: c.update(n_layer=10**6))))
simple("probe-layers-beyond-the-model", r"--layers 0,99: out of range; model .* has probe "
       r"layers 0 \(embedding\) to 2",
       lambda ws, a: ["probe", "--model", str(a.run), "--corpus", str(a.corpus), "--layers",
                      "0,99", "--out", str(ws / "p.json"), "--no-progress"])
simple("attribute-bucket-unknown", r"--bucket 'nope'; the world's exposure buckets are high, "
       r"low, mid",
       lambda ws, a: ["attribute", "--model", str(a.run), "--facts", "2", "--bucket", "nope",
                      "--out", str(ws / "a.json"), "--no-progress"])
simple("attribute-target-two-words", r"--target 'two words'; pass one word",
       lambda ws, a: ["attribute", "--model", str(a.run), "--prompt", "anna lives in",
                      "--target", "two words", "--out", str(ws / "a.json"), "--no-progress"])
simple("export-out-a-file", r"--out .*notes.txt exists and is not a directory",
       lambda ws, a: ["export", "--model", str(a.run), "--out",
                      str(notes(ws / "d") / "notes.txt")])
simple("export-out-inside-its-run", r"lies inside the input --model",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(a.run / "hf")])


@case("train-resume-run-json-a-list", r"run config .*run.json is not a JSON object")
def _(ws: Path, a: Assets) -> list[str]:
    run = Path(shutil.copytree(a.run, ws / "r"))
    (run / "run.json").write_text("[1, 2]")
    return train_args(ws, a, "--resume")


@case("probe-labels-crc", r"val.labels.npz is damaged or truncated \(member .* fails its "
                          r"CRC-32 check\)")
def _(ws: Path, a: Assets) -> list[str]:
    corpus = copy_corpus(ws, a)
    flip(corpus / "val.labels.npz", 0.5, 16)
    return ["probe", "--model", str(a.run), "--corpus", str(corpus), "--tasks", "animacy",
            "--out", str(ws / "p.json"), "--no-progress"]


@case("cache-token-ids-beyond-vocab", r"token id \d+ at position 3 is outside the vocabulary")
def _(ws: Path, a: Assets) -> list[str]:
    import numpy as np

    corpus = copy_corpus(ws, a)
    tokens = np.load(corpus / "val.tokens.npy")
    tokens[3] = 60_000
    np.save(corpus / "val.tokens.npy", tokens)
    return ["cache", "--model", str(a.run), "--corpus", str(corpus), "--split", "val",
            "--hooks", "blocks.0.hook_resid_post", "--out", str(ws / "c.h5"), "--no-progress"]


@case("beliefs-probes-tasks-a-number", r"probe report .* is damaged \(its tasks lack")
def _(ws: Path, a: Assets) -> list[str]:
    (ws / "p.json").write_text('{"schema": "workbench.probe/1", "tasks": 3}')
    return beliefs_args(ws, a, "--probes", str(ws / "p.json"))


# ---- info and app --------------------------------------------------------------------------
simple("info-model-missing", r"does not exist",
       lambda ws, a: ["info", "--model", str(ws / "nope")])


@case("info-weights-flipped", r"does not match its checksum")
def _(ws: Path, a: Assets) -> list[str]:
    ck = copy_ckpt(ws, a)
    flip(ck / "model.safetensors")
    return ["info", "--model", str(ck)]


@case("info-config-list", r"config .* holds a list")
def _(ws: Path, a: Assets) -> list[str]:
    ck = copy_ckpt(ws, a)
    (ck / "config.json").write_text("[]")
    return ["info", "--model", str(ck)]


# ---- export ----------------------------------------------------------------------------
@case("export-attn-only", r"cannot export an attention-only model \(attn_only=True")
def _(ws: Path, a: Assets) -> list[str]:
    ck = copy_ckpt(ws, a)
    edit_json(ck / "config.json", lambda c: c["model"].update(attn_only=True))
    return ["export", "--model", str(ck), "--out", str(ws / "hf")]


simple("export-hf-dir", r"is already a Hugging Face checkpoint",
       lambda ws, a: ["export", "--model", str(a.hf), "--out", str(ws / "hf")])
simple("export-out-not-empty", r"--out .* exists and is not empty; pass --overwrite",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(notes(ws / "hf"))])
simple("export-overwrite-foreign", r"refusing to overwrite .*: it is not an export made by",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(notes(ws / "hf")),
                      "--overwrite"])
simple("export-out-is-run", r"the output .* is the input --model",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(a.run)])
simple("export-step-missing", r"no checkpoint at step\(s\) \[7\] in .*; available: \[0, ",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(ws / "hf"), "--step",
                      "7"])
simple("export-step-text", r"--step: 'x' is not an integer",
       lambda ws, a: ["export", "--model", str(a.run), "--out", str(ws / "hf"), "--step", "x"])


simple("app-runs-missing", r"runs folder .* does not exist",
       lambda ws, a: ["app", "--runs", str(ws / "nope"), "--port", "0"])
simple("app-port-huge", r"--port: 70000 is out of range",
       lambda ws, a: ["app", "--port", "70000"])
simple("app-port-text", r"--port: 'abc' is not an integer",
       lambda ws, a: ["app", "--port", "abc"])
simple("unknown-command", r"invalid choice: 'trian'", lambda ws, a: ["trian"])
simple("missing-required", r"the following arguments are required: --model",
       lambda ws, a: ["eval"])


# ---- the runner ----------------------------------------------------------------------------
def tree_hash(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


# The cases whose refusal needs the model: its own files are damaged (found while loading
# them), or what is refused depends on it (its hook names, its weights' checksum, the
# memory of its activations, the data read through it). Every other case must be refused
# before the model loads (in about the time Python takes to start).
NEEDS_MODEL = {
    "eval-config-list", "eval-config-no-model", "eval-config-wrong-type",
    "eval-config-invalid-json", "eval-config-utf8", "eval-tokenizer-broken",
    "eval-weights-truncated", "eval-weights-flipped", "eval-weights-foreign",
    "eval-model-no-model", "cache-unknown-hook", "cache-batch-huge", "cache-model-flipped",
    "probe-acts-foreign", "probe-acts-damaged", "info-hf-weights-truncated",
    "info-hf-unknown-model-type", "eval-hf-config-wrong-type", "circuit-top-k-above-graph",
}


@pytest.mark.parametrize(("name", "setup", "match"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(name: str, setup: Setup, match: str, assets: Assets, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.models.loader as loader

    argv = setup(tmp_path, assets)
    roots = (tmp_path, assets.corpus, assets.run, assets.hf, assets.acts.parent)
    before = tree_hash(*roots)
    loads: list[str] = []
    real_load = loader.load

    def counted(ref: object, *args: object, **kwargs: object) -> object:
        loads.append(str(ref))
        return real_load(ref, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "load", counted)
    code, err = run_cli(argv)
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1, err
    assert re.search(match, lines[0]), lines[0]
    after = tree_hash(*roots)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == [], f"changed or removed: {changed}"
    partials = [p for p in tmp_path.rglob("*.partial")]
    assert partials == [], partials
    # refused before the model loads, unless the refusal is about the model itself
    assert name in NEEDS_MODEL or loads == [], f"refused only after loading {loads}"


def test_the_suite_is_large_enough() -> None:
    prefix = {"build": "world", "retok": "world", "train": "train", "eval": "eval",
              "cache": "cache", "induction": "induction", "circuit": "circuit", "probe": "probe",
              "beliefs": "beliefs", "info": "info", "export": "export", "app": "app"}
    per: dict[str, int] = {}
    for name, _, _ in CASES:
        command = prefix.get(name.split("-")[0], "any")
        per[command] = per.get(command, 0) + 1
    assert len(CASES) >= 80 and set(prefix.values()) <= set(per), per


# The classes of bad input (issue 37's), each case put in one by what its refusal is about
# (its expected message): the first pattern that matches names the class.
CLASSES: list[tuple[str, str]] = [
    ("data loss", r"refusing to (overwrite|append)|holds .*move them out|is the input|lies "
                  r"inside|contains the input|already exists|exists; pass --overwrite|"
                  r"not empty|exists and is not|is left from an interrupted|not the one the "
                  r"plan"),
    ("integrity", r"damaged|corrupt|truncated|CRC|checksum|not valid JSON|not a JSON|"
                  r"schema|cannot be loaded|not a readable|outside the vocabulary|lacks|"
                  r"holds no model|no config|not a workbench|not an? (activation|probe)|"
                  r"encoded with another|vocabulary of"),
    ("wrong place", r"does not exist|no corpus at|not writable|cannot write|nothing can be "
                    r"created|is a folder|is a file|no tokenizer at|not a sweep plan|hub|"
                    r"not a run of ours|names no corpus"),
    ("value", r"."),  # everything else: a value, size or combination that cannot work
]


def case_class(match: str) -> str:
    return next(cls for cls, pattern in CLASSES if re.search(pattern, match))


def test_every_class_of_bad_input_has_cases() -> None:
    per: dict[str, int] = {}
    for _, _, match in CASES:
        per[case_class(match)] = per.get(case_class(match), 0) + 1
    print("bad-input cases per class:", per)  # noqa: T201  (the note quotes it)
    assert all(per.get(cls, 0) >= 10 for cls, _ in CLASSES), per
