"""Checkpoint files: atomic writes, bit-identical reloads, corrupt or missing parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.models.checkpoints import load_checkpoint, resolve_checkpoint, save_checkpoint
from workbench.models.config import get_preset
from workbench.models.loader import bridge_from_checkpoint, build_bridge, load

CFG = get_preset("tiny").replace(d_vocab=12, n_ctx=8)


@pytest.fixture
def ckpt(tmp_path: Path, tokenizer_file: Path) -> Path:
    torch.manual_seed(1)
    sd = {k: torch.randn_like(v) for k, v in build_bridge(CFG).state_dict().items()}
    out = tmp_path / "run" / "checkpoints" / "step_000004"
    return save_checkpoint(out, sd, CFG, tokenizer_file, meta={"step": 4},
                           train_state={"step": 4, "optimizer": {"x": torch.ones(2)}})


def test_reloaded_checkpoint_gives_bit_identical_logits(ckpt: Path) -> None:
    a, b = load(ckpt), load(ckpt)
    tokens = torch.tensor([[2, 4, 5, 6, 11]])
    with torch.no_grad():
        assert torch.equal(a(tokens), b(tokens))
    original = load_checkpoint(ckpt)
    assert all(torch.equal(a.state_dict()[k], original.state_dict[k]) for k in original.state_dict)
    assert original.train_state()["step"] == 4


def test_run_dir_resolves_to_latest_checkpoint(ckpt: Path) -> None:
    assert resolve_checkpoint(ckpt.parent.parent) == ckpt
    with pytest.raises(FileNotFoundError, match=r"has no checkpoint at step 3; it has \[4\]"):
        resolve_checkpoint(ckpt.parent.parent, step=3)


def test_no_temporary_directories_are_left(ckpt: Path) -> None:
    assert [p.name for p in ckpt.parent.iterdir()] == ["step_000004"]


def test_existing_checkpoint_is_not_overwritten(ckpt: Path, tokenizer_file: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        save_checkpoint(ckpt, {}, CFG, tokenizer_file)


def test_truncated_weights_are_reported(ckpt: Path) -> None:
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model.safetensors does not match its checksum.*"
                       r"corrupt or truncated"):
        load(ckpt)
    with pytest.raises(ValueError, match=r"weights .* are corrupt or truncated"):
        load_checkpoint(ckpt, verify=False)


def test_corrupt_config_is_reported(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is corrupt"):
        load(ckpt)


def test_missing_tokenizer_is_reported(ckpt: Path) -> None:
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer.json; copy the tokenizer.json"):
        load(ckpt)


def test_weights_that_do_not_fit_the_config(ckpt: Path) -> None:
    loaded = load_checkpoint(ckpt)
    loaded.model_cfg = CFG.replace(n_layers=3)
    with pytest.raises(ValueError, match="weights do not fit the model config"):
        bridge_from_checkpoint(loaded)


def test_config_json_carries_the_bridge_config(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    assert config["bridge_config"]["dtype"] == "torch.float32"
    assert config["bridge_config"]["n_layers"] == CFG.n_layers
    assert config["model"] == CFG.to_dict()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, tokenizer_file: Path,
                                        mask: int) -> None:
    import os
    import stat

    from workbench.analysis import write_report
    from workbench.models.checkpoints import write_json_atomic

    old = os.umask(mask)
    try:
        sd = build_bridge(CFG).state_dict()
        ck = save_checkpoint(tmp_path / "ck", sd, CFG, tokenizer_file, meta={"loss": float("nan")},
                             train_state={"step": 0})
        write_json_atomic(tmp_path / "run.json", {"a": 1})
        paths = write_report({"schema": "workbench.x/1"}, tmp_path / "r.json", {})
    finally:
        os.umask(old)
    files = [ck / n for n in ("config.json", "model.safetensors", "tokenizer.json",
                              "train_state.pt")] + [tmp_path / "run.json", *paths]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    assert stat.S_IMODE(ck.stat().st_mode) == 0o777 & ~mask
    assert json.loads((ck / "config.json").read_text())["loss"] is None  # JSON has no NaN
