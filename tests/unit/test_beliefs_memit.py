"""MEMIT and AlphaEdit on a tiny random model: the targets reached, the null-space update,
multi-layer edits restored exactly, the layer range from a trace, the retention term and the
regimes' bookkeeping."""

from __future__ import annotations

import pytest
import torch

from beliefs.editing import key_hook, read_w_out
from beliefs.elicit import candidate_logprobs, single_token_id
from beliefs.factbase import FactBase
from beliefs.memit import LayerEdits, MemitConfig, Request, memit_edit, null_space
from beliefs.metrics import EASYEDIT, EditEvaluator
from beliefs.regimes import RegimeConfig, batch_regime, layer_range, sequential_regime
from beliefs.rome import RomeConfig, optimise_delta
from beliefs.suite import retention_prompts

FAST = RomeConfig(steps=15, n_prefixes=1, prefix_len=2, lr=1.0)


def _requests(model, base: FactBase, n: int) -> tuple[list, list[str]]:  # noqa: ANN001
    beliefs = base.beliefs(["city"], n)
    news = [base.new_object(b) for b in beliefs]
    return [Request([b.prompts[0]], b.subject, [single_token_id(model, new)])
            for b, new in zip(beliefs, news, strict=True)], news


def _covs(model, layers: list[int]) -> dict[int, torch.Tensor]:  # noqa: ANN001
    """The layers' key second moments on random token sequences (a weight edit measured
    against keys unlike the model's own reaches every position)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (64, 32), generator=g)
    names = [key_hook(la) for la in layers]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = {}
    for la, name in zip(layers, names, strict=True):
        k = cache[name].reshape(-1, model.cfg.d_mlp).float()
        out[la] = k.T @ k / len(k)
    return out


def test_memit_writes_every_request_and_restores_exactly(model, base: FactBase) -> None:  # noqa: ANN001
    reqs, news = _requests(model, base, 3)
    beliefs = base.beliefs(["city"], 3)
    before = {la: read_w_out(model, la) for la in (0,)}
    edit = memit_edit(model, reqs, [0], _covs(model, [0]), MemitConfig(z=FAST, mom2_weight=1.0))
    assert isinstance(edit, LayerEdits) and edit.layers == [0] and edit.layer == 0
    assert edit.info["n_requests"] == 3 and edit.info["target_missing"] < 0.5
    gain = []
    for b, new in zip(beliefs, news, strict=True):
        i = b.candidates.index(new)
        p0 = candidate_logprobs(model, b.prompts[:1], b.candidates)[0, i]
        with edit.applied(model):
            gain.append(float(candidate_logprobs(model, b.prompts[:1], b.candidates)[0, i] - p0))
    assert sum(gain) > 0  # a random model barely follows (NLL 6.0 -> 5.9 in 15 steps)
    assert torch.equal(read_w_out(model, 0), before[0])  # restored to the bit
    copy = edit.copy_applied(model)
    assert torch.allclose(read_w_out(copy, 0), before[0] + edit.edits[0].delta, atol=1e-6)
    doubled = edit.plus(edit)
    assert torch.allclose(doubled.edits[0].delta, 2 * edit.edits[0].delta)
    assert doubled.norm() == pytest.approx(2 * edit.norm(), rel=1e-5)


def test_memit_spreads_over_layers_and_refuses_the_last(model, base: FactBase) -> None:  # noqa: ANN001
    reqs, _ = _requests(model, base, 1)
    edit = memit_edit(model, reqs, [0], _covs(model, [0]), MemitConfig(z=FAST))
    assert edit.info["z_layer"] == 0
    last = model.cfg.n_layers - 1
    with pytest.raises(ValueError, match="below the last"):
        memit_edit(model, reqs, [last], _covs(model, [last]), MemitConfig(z=FAST))
    with pytest.raises(ValueError, match="key covariance for layer 0"):
        memit_edit(model, reqs, [0], {}, MemitConfig(z=FAST))
    with pytest.raises(ValueError, match="no fact to edit"):
        memit_edit(model, [], [0], _covs(model, [0]))


def test_row_keys_fit_every_context_and_equal_mean_keys_with_one_row(model, base: FactBase  # noqa: ANN001
                                                                       ) -> None:
    beliefs = base.beliefs(["city"], 4)
    covs = _covs(model, [0])
    one = [Request(b.prompts[:1], b.subject, [single_token_id(model, base.new_object(b))])
           for b in beliefs]
    by = {keys: memit_edit(model, one, [0], covs, MemitConfig(z=FAST, keys=keys), prefixes=[])
          for keys in ("rows", "mean")}
    # one row per request: a row's key is its request's mean key
    assert torch.allclose(by["rows"].edits[0].delta, by["mean"].edits[0].delta, atol=1e-5)
    many = [Request(b.prompts[:3], b.subject, r.target_ids) for b, r in zip(beliefs, one,
                                                                           strict=True)]
    prefixes = ["the river", "a market in the north"]
    by = {keys: memit_edit(model, many, [0], covs, MemitConfig(z=FAST, keys=keys),
                           prefixes=prefixes) for keys in ("rows", "mean")}
    assert by["rows"].info["keys"] == "rows"
    # each context's key is a constraint: the rows miss less of their targets
    assert by["rows"].info["target_missing_rows"] < by["mean"].info["target_missing_rows"]
    with pytest.raises(ValueError, match="keys='all'"):
        MemitConfig(keys="all")


def test_alphaedit_update_lies_in_the_null_space(model, base: FactBase) -> None:  # noqa: ANN001
    reqs, _ = _requests(model, base, 2)
    covs = _covs(model, [0])
    cfg = MemitConfig(z=FAST, project=True, null_threshold=0.05)
    p = null_space(covs[0], cfg.null_threshold)
    assert 0 < float(p.trace()) < model.cfg.d_mlp  # some directions, not all
    assert torch.allclose(p @ p, p, atol=1e-5)
    delta = memit_edit(model, reqs[:1], [0], covs, cfg).edits[0].delta
    eye = torch.eye(model.cfg.d_mlp)
    # no change reaches the corpus keys outside the null space
    assert (eye - p).matmul(delta).norm() < 1e-4 * max(delta.norm(), 1e-6)
    # an earlier edit's key held: the later edit moves its value less than without it
    k_prev = torch.randn(model.cfg.d_mlp, 1)
    prev = {0: 100.0 * k_prev @ k_prev.T}
    held = memit_edit(model, reqs[1:], [0], covs, cfg, previous=prev).edits[0].delta
    free = memit_edit(model, reqs[1:], [0], covs, cfg).edits[0].delta
    assert (k_prev.T @ held).norm() < (k_prev.T @ free).norm()


def test_layer_range_follows_the_trace() -> None:
    roles = ["subject_first", "subject_middle", "subject_last", "after_subject", "last_token"]

    def trace(effects: list[float], peak: int) -> dict:
        rows = [[0.0, None, e, 0.0, 0.0] for e in effects]
        return {"roles": roles, "indirect_effect": {"mlp": rows}, "peak_layer": peak}

    assert layer_range(trace([0.9, 0.7, 0.1, 0.8], 0), 4) == [0, 1]
    assert layer_range(trace([0.9, 0.5, 0.1, 0.8], 0), 4) == [0]  # under three quarters
    assert layer_range(trace([0.1, 0.9, 0.8, 0.9], 1), 4) == [1, 2]  # never the last
    assert layer_range(trace([0.9, 0.1, 0.9, 0.9], 0), 4) == [0]  # contiguous only
    assert layer_range(trace([0.9], 0), 1) == [0]


def test_retention_term_holds_the_subjects_other_prompts(model, base: FactBase) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], 1)[0]
    keep = retention_prompts(base, b)
    assert keep and all(b.subject.split()[0] in k for k in keep)
    assert not set(keep) & {p for o in base.other_relations(b) for p in o.paraphrases}
    target = [single_token_id(model, base.new_object(b))]
    cfg = RomeConfig(steps=20, n_prefixes=0, prefix_len=1, lr=1.0, plateau_steps=0,
                     stop_nll=0.0)
    _, _, free = optimise_delta(model, [b.prompts[0]], b.subject, target, 0, cfg, [], keep)
    held_cfg = RomeConfig(**{**cfg.__dict__, "retain_weight": 50.0})
    _, _, held = optimise_delta(model, [b.prompts[0]], b.subject, target, 0, held_cfg, [], keep)
    assert free["n_kept"] == 0 and held["n_kept"] == len(keep)
    assert held["final_retain"] < 0.5 * max(_kl_unheld(model, b, target, keep, cfg), 1e-9)


def _kl_unheld(model, b, target, keep, cfg) -> float:  # noqa: ANN001
    """The retention KL of the delta found without the term (measured with it at weight
    ~0, so the KL is reported but does not steer)."""
    probe = RomeConfig(**{**cfg.__dict__, "retain_weight": 1e-9})
    return optimise_delta(model, [b.prompts[0]], b.subject, target, 0, probe, [], keep)[2][
        "final_retain"]


def test_batch_and_sequential_regimes_report_what_they_did(model, base: FactBase) -> None:  # noqa: ANN001
    covs = _covs(model, [0])
    ev = EditEvaluator(model, base, None)
    regime = RegimeConfig(regimes=("batch", "sequential"), batch_sizes=(2, 0), sequential=3,
                          every=2)
    cfg = MemitConfig(z=FAST, mom2_weight=1.0)
    batch = batch_regime(model, base, ev, [0], covs, cfg, regime, 0, [], retention_prompts, {})
    n_city = len(base.beliefs(["city"]))
    assert [b["size"] for b in batch] == [2, n_city] and batch[1]["requested"] == 0
    assert len(batch[0]["edits"]) == 2 and 0 <= batch[0]["efficacy"] <= 1
    # every person edited at once: no unedited neighbour left to measure specificity on
    assert batch[1]["specificity"] is None
    seq = sequential_regime(model, base, ev, [0], covs, cfg, regime, 0, [], retention_prompts,
                            {})
    assert set(seq["runs"]) == {"projected", "held", "plain"}
    for run in seq["runs"].values():
        assert [p["edits_so_far"] for p in run["points"]] == [2, 3]
        assert run["first_efficacy_end"] == run["points"][-1]["first_efficacy"]
        # the new object on top beats the old one: stated never exceeds efficacy
        assert 0 <= run["first_stated_end"] <= run["first_efficacy_end"]
    for row in batch[1]["edits"]:
        assert row["stated"] <= row["efficacy"]
    with pytest.raises(ValueError, match="regimes"):
        RegimeConfig(regimes=("nope",))
    assert set(EASYEDIT) == {"reliability", "generalization", "locality", "portability"}
