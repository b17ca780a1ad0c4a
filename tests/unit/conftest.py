"""Unit-tier fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    """A 12-word word-level tokenizer (`a` .. `g`, `.` and the specials) as a run saves it."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "d",
                                         "e", "f", "g", "."])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def base():  # noqa: ANN201
    """The facts of a 12-person world (`beliefs.factbase.FactBase`), once per module."""
    from beliefs.factbase import world_facts
    from workbench.world.facts import WorldConfig, build_world

    return world_facts(build_world(WorldConfig(seed=0, n_people=12)))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A random 2-layer model (d_model 32) with the world's tokenizer, once per module
    (modules with their own `model` fixture use theirs)."""
    from workbench.models.config import get_preset
    from workbench.models.loader import build_bridge
    from workbench.world.tokenizer import build_world_tokenizer
    from workbench.world.tokenizer_files import load_hf_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok = build_world_tokenizer()
    tok.save(str(path))
    cfg = get_preset("tiny").replace(d_vocab=tok.get_vocab_size(), n_layers=2, d_model=32,
                                     n_heads=2, d_head=16, d_mlp=64, n_ctx=64)
    torch.manual_seed(0)
    return build_bridge(cfg, tokenizer=load_hf_tokenizer(path))
