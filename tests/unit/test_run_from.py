"""Resuming a native model's blocks from a layer (`workbench.hooks.run_from`): the blocks
below stand in for themselves with what they return (native blocks return a 1-tuple), and
the check `resumes_exactly` makes is not fooled by a batch of one."""

from __future__ import annotations

import torch

from workbench.hooks import _RESUMES, resid_entering, resumes_exactly, run_from


def test_native_blocks_resume_on_a_batch_checked_with_one_row(model) -> None:  # noqa: ANN001
    tokens = torch.randint(1, model.cfg.d_vocab, (3, 10),
                           generator=torch.Generator().manual_seed(0))
    _RESUMES.pop(model, None)
    with torch.no_grad():
        full = model(tokens)
        assert resumes_exactly(model, tokens[:1], 1)  # one row, as the fluency loss checks
        resumed = run_from(model, resid_entering(model, tokens, 1), 1)
    torch.testing.assert_close(resumed, full, atol=1e-5, rtol=1e-5)
