"""Which tokens become activation rows, and the fixed batches that compute them."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.cache.plan import iter_batches, iter_length_batches, make_plan
from workbench.hooks import resolve_hooks

TOKENS = np.array([2, 10, 11, 12, 2, 13, 14, 2, 15, 16, 17, 18, 19], dtype=np.uint16)
DOCS = np.array([[0, 4], [4, 7], [7, 13]])


def test_all_positions_cover_every_token_once() -> None:
    plan = make_plan(TOKENS, DOCS, n_ctx=8, positions="all")
    assert plan.n_rows == len(TOKENS) and plan.n_seqs == 3
    rows = np.concatenate([s + plan.kept(TOKENS[s: s + n])
                           for s, n in zip(plan.starts, plan.lengths)])
    assert np.array_equal(rows, np.arange(len(TOKENS)))


def test_last_position_is_one_row_per_sequence() -> None:
    plan = make_plan(TOKENS, DOCS, n_ctx=8, positions="last")
    assert plan.n_rows == 3
    assert [int(s + plan.kept(TOKENS[s: s + n])[0]) for s, n in
            zip(plan.starts, plan.lengths)] == [3, 6, 12]


def test_word_final_keeps_the_last_sub_token_of_each_word() -> None:
    starts = np.ones(20, dtype=bool)
    starts[[11, 16, 17]] = False  # 11, 16 and 17 continue the word before them
    plan = make_plan(TOKENS, DOCS, n_ctx=8, positions="word-final", word_starts=starts,
                     special_ids=(2,))
    kept = [int(s + k) for s, n in zip(plan.starts, plan.lengths)
            for k in plan.kept(TOKENS[s: s + n])]
    assert kept == [2, 3, 5, 6, 10, 11, 12]  # BOS dropped; 10-11 and 15-16-17 are one word each


def test_long_documents_need_chunking() -> None:
    with pytest.raises(ValueError, match=r"document 2 has 6 tokens; model n_ctx is 4\. Pass "
                       r"--chunk"):
        make_plan(TOKENS, DOCS, n_ctx=4, positions="all")
    plan = make_plan(TOKENS, DOCS, n_ctx=4, positions="all", chunk=True)
    assert plan.lengths.tolist() == [4, 3, 4, 2] and plan.docs.tolist() == [0, 1, 2, 2]


def test_max_tokens_caps_the_plan() -> None:
    plan = make_plan(TOKENS, DOCS, n_ctx=8, positions="all", max_tokens=5)
    assert plan.n_tokens == 5 and plan.lengths.tolist() == [4, 1]


def test_unknown_positions_mode() -> None:
    with pytest.raises(ValueError, match=r"positions='first'; choose one of"):
        make_plan(TOKENS, DOCS, n_ctx=8, positions="first")


def test_batches_are_fixed_and_padded() -> None:
    plan = make_plan(TOKENS, DOCS, n_ctx=8, positions="all")
    batches = list(iter_batches(plan, TOKENS, batch_size=2, seq_lo=0, seq_hi=3))
    assert [(b.seq_lo, b.seq_hi, b.row_lo, b.row_hi) for b in batches] == [
        (0, 2, 0, 7), (2, 3, 7, 13)]
    first = batches[0]
    assert first.tokens.tolist() == [[2, 10, 11, 12], [2, 13, 14, 0]]
    assert first.flat_index.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert first.meta["offset"].tolist() == list(range(7))
    resumed = next(iter_batches(plan, TOKENS, batch_size=2, seq_lo=2, seq_hi=3))
    assert resumed.tokens.tolist() == batches[1].tokens.tolist()


def test_length_batches_hold_the_same_rows_with_less_padding() -> None:
    tokens = np.arange(40, dtype=np.uint16)
    docs = np.array([[0, 9], [9, 11], [11, 20], [20, 22], [22, 31], [31, 33]])  # 9, 2, 9, ...
    plan = make_plan(tokens, docs, n_ctx=16, positions="all")
    fixed = list(iter_batches(plan, tokens, batch_size=2, seq_lo=0, seq_hi=plan.n_seqs))
    by_length = list(iter_length_batches(plan, tokens, batch_size=2))
    assert sum(b.tokens.numel() for b in fixed) == 54  # each pair padded to 9
    assert sum(b.tokens.numel() for b in by_length) == 2 * 2 + 2 * 9 + 2 * 9
    for batches in (fixed, by_length):  # every row once, with its own token and metadata
        rows = np.concatenate([b.rows for b in batches])
        assert sorted(rows.tolist()) == list(range(plan.n_rows))
        for b in batches:
            flat = b.tokens.flatten()[b.flat_index].numpy()
            assert np.array_equal(flat, tokens[b.meta["offset"]])
            assert np.array_equal(b.meta["offset"], b.rows)  # positions="all": row = offset
    some = list(iter_length_batches(plan, tokens, batch_size=8, seqs=np.array([4, 1])))
    assert len(some) == 1 and some[0].meta["seq"].tolist() == [1] * 2 + [4] * 9


def test_unknown_hook_pattern_lists_the_valid_names() -> None:
    class Model:
        hook_dict = {"hook_embed": 0, "blocks.0.hook_resid_post": 0, "blocks.1.hook_resid_post": 0}

    with pytest.raises(ValueError, match=r"'blocks\.\*\.hook_resid_psot' matches no hook point"
                       r".*Valid names: hook_embed, blocks\.\{0\.\.1\}\.hook_resid_post"):
        resolve_hooks(Model(), ["blocks.*.hook_resid_psot"])
