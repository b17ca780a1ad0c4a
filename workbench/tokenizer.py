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
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path), add_bos_token=True, name_or_path=str(path), **SPECIAL_TOKENS
    )
    tok.padding_side = "right"
    return tok
