"""Load a `tokenizers` file as the Hugging Face tokenizer TransformerBridge expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
}


def load_hf_tokenizer(path: str | Path) -> Any:
    """A `transformers.PreTrainedTokenizerFast` over a `tokenizer.json` of ours.

    Our tokenizers (word-level for the world, BPE for real text) reserve ids 0-3 for
    `<pad> <unk> <bos> <eos>`.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer {path} not found; build a corpus with `workbench world build` "
            "(it writes tokenizer.json) or copy the model's tokenizer.json there"
        )
    # add_bos_token: `bridge.to_tokens(text)` starts with <bos>, as every training document
    # does; name_or_path: TransformerLens reads it from init_kwargs.
    try:
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(path), add_bos_token=True, name_or_path=str(path),
            **SPECIAL_TOKENS)
    except Exception as exc:  # `tokenizers` raises plain Exceptions for a broken file
        raise ValueError(f"tokenizer {path} is damaged or not a tokenizers file ({exc}); copy "
                         "the tokenizer.json of the corpus the model was trained on there"
                         ) from exc
    tok.padding_side = "right"
    return tok


def read_tokenizer_file(path: str | Path) -> Any:
    """A `tokenizers.Tokenizer` from a `tokenizer.json`, or one error naming the file."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} not found; build a corpus with `workbench "
                                "world build` (it writes tokenizer.json) or pass another file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # `tokenizers` raises plain Exceptions for a broken file
        raise ValueError(f"tokenizer {path} is damaged or not a tokenizers file ({exc}); "
                         "rebuild the corpus or pass another tokenizer.json") from exc
