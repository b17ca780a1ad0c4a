"""Unit-tier fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
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
