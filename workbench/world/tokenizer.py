"""Tokenizers: word-level for the world (one word = one token), byte-level BPE for real text.

Both reserve ids 0-3 for `<pad> <unk> <bos> <eos>` and add no special tokens when encoding:
corpus documents get their `<bos>` from the corpus builder, prompts from the caller (or from
`load_hf_tokenizer`, which adds it).

>>> tok = build_world_tokenizer()
>>> tok.token_to_id("<bos>"), tok.decode(tok.encode("the dog eats .").ids)
(2, 'the dog eats .')
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from workbench.world.documents import document_words
from workbench.world.labels import SPECIAL_TOKENS
from workbench.world.lexicon import lexicon_words
from workbench.world.templates import template_words
from workbench.world.tokenizer_files import load_hf_tokenizer as load_hf_tokenizer  # noqa: F401


def world_words() -> list[str]:
    """Every word any world generator can emit (sorted, specials excluded).

    It does not depend on the world's seed, so world tokenizers of all seeds are identical.
    """
    return sorted(set(lexicon_words()) | set(template_words()) | set(document_words()))


def build_world_tokenizer(words: Iterable[str] | None = None) -> Tokenizer:
    """A `WordLevel` tokenizer over specials (ids 0-3) followed by the sorted words."""
    words = world_words() if words is None else sorted(set(words))
    clash = sorted(set(words) & set(SPECIAL_TOKENS))
    if clash:
        raise ValueError(f"words {clash} collide with special tokens; remove them")
    vocab = {w: i for i, w in enumerate(list(SPECIAL_TOKENS) + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """Byte-level BPE (GPT-2 style, no prefix space) trained on `texts`, specials at 0-3."""
    low = 256 + len(SPECIAL_TOKENS)
    if vocab_size < low:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus specials; "
            f"pass vocab_size >= {low}"
        )
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok
