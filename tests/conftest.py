"""Shared fixtures. Models and corpora are built in fixtures (never at import time) from tiny
configs with fixed seeds; session fixtures are read-only (copy them before changing)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# `make test` runs two pytest-xdist workers on two cores: each computes on one thread, as do
# the processes it starts (two workers of two threads each fight and run ~3x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def make_hf_gpt2_dir(path: Path, seed: int = 0) -> Path:
    """A tiny randomly initialised GPT-2 with a BPE tokenizer, saved like a hub download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["the cat sat on the mat .", "the dogs that the cat sees run .",
            "anna berg lives in velmora ."]
    tok.train_from_iterator(text * 50, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>")
    eot = tok.token_to_id("<|endoftext|>")
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2,
                     n_head=4, bos_token_id=eot, eos_token_id=eot)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hf_gpt2_dir(tmp_path_factory.mktemp("hf") / "tiny-gpt2")
