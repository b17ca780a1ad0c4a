"""Belief tests on tiny random models: fact bases, candidate scores, ladder contexts, weight
edits (exact restore, copies, the rank-one solution) and the errors users meet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from beliefs.editing import (
    WeightEdit,
    check_layer,
    read_w_out,
    rewrite_batch,
)
from beliefs.elicit import candidate_logprobs, elicit, single_token_id
from beliefs.factbase import DEFAULT_FACTS, FactBase, fill, load_facts
from beliefs.finetune import FinetuneConfig, finetune_edit
from beliefs.ladder import LEVELS, LadderConfig, contexts, controls, ladder, summarize_ladder
from beliefs.metrics import EditEvaluator, aggregate
from beliefs.rome import RomeConfig, rank_one_update, rome_edit
from beliefs.steering import SteerConfig, steer_edit
from workbench.models.loader import load
from workbench.prompts import candidate_logprobs_many, encode_prompt


def test_world_fact_base(base: FactBase) -> None:
    assert set(base.relations) == {"city", "job", "pet", "food", "country"}
    b = base.beliefs(["city"], n=1)[0]
    assert b.prompts[0] == f"{b.subject} lives in"  # the plain frame is the edit prompt
    assert not set(b.prompts) & set(b.paraphrases) and len(b.paraphrases) >= 1
    assert all(b.subject.split()[0] in p for p in b.prompts + b.paraphrases)
    assert b.statement("solvik").endswith("lives in solvik .")
    # beliefs spread over subjects first, seeded
    many = base.beliefs(n=12, seed=3)
    assert len({x.subject for x in many}) == 12
    assert [x.subject for x in many] == [x.subject for x in base.beliefs(n=12, seed=3)]
    new = base.new_object(b, seed=0)
    assert new != b.object and new in b.candidates and new == base.new_object(b, seed=0)
    assert all(n.subject != b.subject for n in base.neighbours(b, 5))
    assert {o.relation for o in base.other_relations(b)} == {"job", "pet", "food"}
    country = base.relations["country"].derived_from[1]
    far = next(c for c in b.candidates if country[c] != country[b.object])
    near = [c for c in b.candidates if c != b.object and country[c] == country[b.object]]
    (hop, want), = base.two_hop(b, far)
    assert hop.relation == "country" and want == country[far]
    assert all(base.two_hop(b, c) == [] for c in near)  # the country cannot tell: not asked
    assert base.object(b.subject, "country") == base.relations["country"].derived_from[1][
        b.object]
    # what the world planted about each fact, stated and two-hop countries told apart
    info = base.exposure_of(b.subject, "city")
    assert info["in_text"] and info["bucket"] in ("low", "mid", "high") and info["exposure"] > 0
    stated = {base.exposure_of(s, "country")["in_text"] for s in base.subjects}
    assert stated == {True, False}
    assert base.relations["country"].templates and base.relations["country"].heldout
    assert fill("as for {S} , {F} owns a", "anna berg") == "as for anna berg , anna owns a"


def test_fact_base_errors(base: FactBase, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown relation 'planet'.*use one of"):
        base.belief("x y", "planet")
    with pytest.raises(ValueError, match="no fact"):
        base.belief("nobody here", "city")
    bad = tmp_path / "facts.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="expected 'workbench.facts/1'"):
        load_facts(bad)
    bad.write_text(json.dumps({"schema": "workbench.facts/1", "relations": {}, "facts": [
        {"subject": "a", "relation": "moon", "object": "b"}]}))
    with pytest.raises(ValueError, match=r"relations \['moon'\] that are not defined"):
        load_facts(bad)
    with pytest.raises(FileNotFoundError, match="--facts"):
        load_facts(tmp_path / "missing.json")


def test_real_fact_list() -> None:
    real = load_facts(DEFAULT_FACTS)
    assert set(real.relations) == {"capital", "language", "continent"}
    b = real.belief("France", "capital")
    assert b.object == "Paris" and b.prompts[0] == "The capital of France is"
    assert "Berlin" in b.candidates and len(b.paraphrases) == 3
    assert len(real.neighbours(b, 5)) == 5


def test_candidate_logprobs_single_and_multi_token(hf_gpt2_dir: Path) -> None:
    m = load(hf_gpt2_dir)
    prompts, cands = ["the cat sat on the", "anna berg lives in"], ["mat", "zebrak", "cat"]
    got = candidate_logprobs(m, prompts, cands)
    for i, p in enumerate(prompts):  # teacher forcing, by hand
        for j, c in enumerate(cands):
            ids = encode_prompt(m, p)
            cid = m.tokenizer.encode(" " + c, add_special_tokens=False)
            with torch.no_grad():
                logp = F.log_softmax(m(torch.tensor([ids + cid]))[0].float(), -1)
            want = sum(logp[len(ids) - 1 + k, t] for k, t in enumerate(cid))
            assert len(cid) > 1 or c != "zebrak"  # the multi-token path is exercised
            assert got[i, j] == pytest.approx(float(want), abs=1e-4)
    with pytest.raises(ValueError, match="'zebrak' is .* tokens.*one-token object"):
        single_token_id(m, "zebrak")


def test_candidate_groups_scored_together_equal_one_call_each(hf_gpt2_dir: Path) -> None:
    m = load(hf_gpt2_dir)
    groups = [(["the cat sat on the", "anna berg lives in"], ["mat", "cat"]),
              (["the dog"], ["zebrak", "cat"]),  # a multi-token candidate: its own passes
              ([], ["mat"]),
              (["a cat", "the mat is", "it"], ["sat"])]
    got = candidate_logprobs_many(m, groups)
    assert [tuple(g.shape) for g in got] == [(2, 2), (1, 2), (0, 1), (3, 1)]
    for (prompts, cands), logp in zip(groups, got, strict=True):
        torch.testing.assert_close(logp, candidate_logprobs(m, prompts, cands),
                                   atol=1e-5, rtol=1e-5)


def test_elicit_and_ladder(model, base: FactBase) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], n=1)[0]
    e = elicit(model, b)
    assert e.stated in b.candidates and len(e.answers) == len(b.prompts) + len(b.paraphrases)
    assert 0 < e.consistency <= 1 and 0 <= e.p_object <= 1 and e.strength == e.margin
    new = base.new_object(b)
    at_once = contexts(base, b, new, LadderConfig(between=0))
    assert list(at_once) == list(LEVELS) and at_once["none"] == ""
    assert at_once["repeated"].count(new) == 3 and at_once["fewshot"].endswith(at_once["news"])
    assert at_once["rumor"] == f"a rumor says that {b.statement(new)}"
    ctx = contexts(base, b, new, LadderConfig())  # one other subject's true fact, then the ask
    gap = ctx["none"]
    assert gap.count(" lives in ") == 1 and b.subject not in gap and new not in gap.split()
    assert all(ctx[lv] == f"{at_once[lv]} {gap}" for lv in LEVELS if lv != "none")
    gap_subject = " ".join(gap.split()[:2])
    assert all(gap_subject != c.subject for c in controls(base, b, LadderConfig()))
    assert ctx["hearsay"].startswith("i heard that") and ctx["news"].startswith("news :")
    assert ctx["fewshot"].count("news :") == 1 + LadderConfig().n_demos
    tok = model.tokenizer
    for text in ctx.values():  # every word of every level is in the world's vocabulary
        assert tok.unk_token_id not in tok.encode(text, add_special_tokens=False)
    row = ladder(model, base, b, new)
    assert set(row["levels"]) == set(LEVELS) and set(row["others_kept"]) == set(LEVELS)
    assert row["others_kept"]["none"] == 1.0
    s = summarize_ladder([row])
    assert sum(s["flip_level"].values()) == 1
    with pytest.raises(ValueError, match="not a candidate"):
        ladder(model, base, b, "nowhere")


def test_edit_applied_restores_exactly_and_copies(model) -> None:  # noqa: ANN001
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_before = model(torch.tensor([[2, 5, 6, 7]]))
    delta = torch.randn(model.cfg.d_mlp, model.cfg.d_model)
    edit = WeightEdit(1, delta, "test")
    with edit.applied(model):
        assert torch.allclose(read_w_out(model, 1), before_w := read_w_out(model, 1))
        assert not torch.equal(model(torch.tensor([[2, 5, 6, 7]])), out_before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    copy = edit.copy_applied(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.allclose(read_w_out(copy, 1) - read_w_out(model, 1), delta, atol=1e-6)
    assert before_w.shape == (model.cfg.d_mlp, model.cfg.d_model)
    with pytest.raises(ValueError, match="layer 5 is out of range.*0..1"):
        check_layer(model, 5)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        WeightEdit(2, delta).copy_applied(model)


def test_rank_one_update_maps_key_to_delta() -> None:
    torch.manual_seed(0)
    keys = torch.randn(500, 16) @ torch.randn(16, 16)
    cov = keys.T @ keys / len(keys)
    k, delta = keys[0], torch.randn(8)
    upd = rank_one_update(k, delta, cov, ridge=0.0)
    assert torch.allclose(k @ upd, delta, atol=1e-4)
    assert torch.linalg.matrix_rank(upd) == 1
    # among updates that map k to delta, C^-1 k has the least mean change on the keys
    naive = torch.outer(k / (k @ k), delta)
    assert (keys @ upd).pow(2).mean() < (keys @ naive).pow(2).mean()


def test_rome_and_ft_edits_on_a_random_model(model, base: FactBase) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], n=1)[0]
    new = base.new_object(b)
    target = [single_token_id(model, new)]
    cov = torch.eye(model.cfg.d_mlp)
    grads = [p.grad for p in model.parameters()]
    rome = rome_edit(model, [b.prompts[0]], b.subject, target, 0, cov,
                     RomeConfig(steps=10, n_prefixes=2, prefix_len=3))
    ft = finetune_edit(model, [b.prompts[0]], b.subject, target, 0,
                       FinetuneConfig(steps=10, n_prefixes=2, prefix_len=3, eps=0.05))
    assert [p.grad for p in model.parameters()] == grads  # no gradients left on the model
    assert ft.delta.abs().max() <= 0.05 + 1e-7 and rome.info["n_rows"] == 3
    i_new = b.candidates.index(new)
    p_before = candidate_logprobs(model, b.prompts[:1], b.candidates)[0, i_new]
    for edit in (rome, ft):
        with edit.applied(model):
            assert candidate_logprobs(model, b.prompts[:1], b.candidates)[0, i_new] > p_before
    ev = EditEvaluator(model, base, None)
    rows = [ev.evaluate(b, new, e) for e in (None, rome, ft)]
    agg = aggregate(rows)
    assert agg["n"] == 3 and set(agg["ci"]) >= {"efficacy", "specificity"}
    with pytest.raises(ValueError, match=r"key covariance has shape \(3, 3\)"):
        rome_edit(model, [b.prompts[0]], b.subject, target, 1, torch.eye(3))
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        finetune_edit(model, [b.prompts[0]], b.subject, target, 9)


def test_fine_tuning_uses_the_smallest_box_that_makes_the_edit(model, base: FactBase) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], n=1)[0]
    target = [single_token_id(model, base.new_object(b))]
    small = dict(steps=10, n_prefixes=2, prefix_len=3)
    args = (model, [b.prompts[0]], b.subject, target, 0)
    tight = finetune_edit(*args, FinetuneConfig(**small, eps=(0.05, 1e-6)))  # sorted: 1e-6 first
    assert [t["eps"] for t in tight.info["tried"]] == [1e-6, 0.05]  # 1e-6 cannot do it
    assert tight.info["eps"] == 0.05  # the last box, whether or not it succeeded
    assert tight.delta.abs().max() <= 0.05 + 1e-7
    easy = finetune_edit(*args, FinetuneConfig(**small, eps=(1e-6, 0.05), success_nll=100.0))
    assert easy.info["eps"] == 1e-6 and len(easy.info["tried"]) == 1
    alone = finetune_edit(*args, FinetuneConfig(**small, eps=0.05))  # one box: the same edit
    assert torch.equal(alone.delta, tight.delta)
    with pytest.raises(ValueError, match=r"eps=\(\)"):
        FinetuneConfig(eps=())


def test_subject_and_prompt_errors(model) -> None:  # noqa: ANN001
    batch = rewrite_batch(model, ["anna berg lives in"], "anna berg", [5], [])
    assert batch.subject_pos.tolist() == [2]  # <bos> anna berg
    with pytest.raises(ValueError, match="subject 'tom lind' is not in the prompt"):
        rewrite_batch(model, ["anna berg lives in"], "tom lind", [5], [])
    with_prefix = rewrite_batch(model, ["anna berg lives in"], "anna berg", [5], ["the dog runs"])
    assert with_prefix.subject_pos.tolist() == [2, 5]  # <bos> the dog runs anna berg


def test_steering_positions() -> None:
    from beliefs.steering import subject_positions

    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 7, 5, 6, 0], [1, 7, 7, 7, 7]])
    assert subject_positions(tokens, [[5, 6]], "after") == ([0, 0, 0, 1, 1], [2, 3, 4, 3, 4])
    assert subject_positions(tokens, [[5, 6]], "subject") == ([0, 0, 1, 1], [1, 2, 2, 3])
    with pytest.raises(ValueError, match=r"SteerConfig.position='middle'; choose one of"):
        SteerConfig(position="middle")


def test_steering_edit_acts_where_the_subject_is_and_leaves_no_trace(model, base: FactBase
                                                                     ) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], n=1)[0]
    other = base.neighbours(b, 1)[0]
    new = base.new_object(b)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = [b.prompts[0], other.prompts[0]]
    clean = candidate_logprobs(model, prompts, b.candidates)
    edit = steer_edit(model, base, b, new, 0, alpha=50.0, cfg=SteerConfig())
    assert edit.info["n_new"] + edit.info["n_old"] >= 1 and edit.norm() > 0
    with edit.applied(model):
        steered = candidate_logprobs(model, prompts, b.candidates)
    assert not torch.allclose(steered[0], clean[0])  # the subject's prompt moves
    torch.testing.assert_close(steered[1], clean[1])  # another subject's does not
    torch.testing.assert_close(candidate_logprobs(model, prompts, b.candidates), clean)
    copy = edit.copy_applied(model)
    torch.testing.assert_close(candidate_logprobs(copy, prompts, b.candidates), steered)
    torch.testing.assert_close(candidate_logprobs(model, prompts, b.candidates), clean)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_steering_calibration_scores_margins_and_extends_the_grid(model, base: FactBase  # noqa: ANN001
                                                                  ) -> None:
    from beliefs.steering import calibrate, calibration_total

    facts = base.beliefs(["city"], n=2)
    out = calibrate(model, base, facts, SteerConfig(layers=(0,), alphas=(0.5,), extend=2))
    alphas = [t["alpha"] for t in out["tried"]]
    # the grid's only scale is its top: it is doubled at least once, and stops at a worse one
    assert alphas[:2] == [0.5, 1.0] and set(alphas) <= {0.5, 1.0, 2.0}
    best = max(out["tried"], key=calibration_total)
    assert calibration_total({k: out["tried"][alphas.index(out["alpha"])][k]
                              for k in ("firm", "specificity", "kept")}) == \
        calibration_total(best)
    for t in out["tried"]:
        assert 0 <= t["firm"] <= t["efficacy"] <= 1 and isinstance(t["margin"], float)
    # firm efficacy is what counts when measured; the plain efficacy otherwise
    assert calibration_total({"firm": 0.5, "efficacy": 1.0, "kept": 1.0}) == 1.5
    assert calibration_total({"efficacy": 1.0, "kept": 1.0}) == 2.0


def test_second_moment_from_the_lower_blocks_equals_the_full_product() -> None:
    from beliefs.editing import SECOND_MOMENT_BLOCK, add_second_moment

    g = torch.Generator().manual_seed(0)
    for d in (3, SECOND_MOMENT_BLOCK, 2 * SECOND_MOMENT_BLOCK + 5):
        k = torch.randn(50, d, generator=g)
        cov = torch.eye(d, dtype=torch.float64)
        add_second_moment(cov, k)
        torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64) + (k.T @ k).double(),
                                   atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("tasks", [3, {"city": 3}, {"city": {"kind": "facts", "layers": []}},
                                   {"city": {"kind": "facts", "best_layer": 1,
                                             "layers": [{"layer": 0, "selectivity": 0.1}]}}])
def test_a_damaged_probe_report_is_one_error(tmp_path: Path, tasks: object) -> None:
    from beliefs.suite import load_probe_report

    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"schema": "workbench.probe/1", "tasks": tasks}))
    with pytest.raises(ValueError, match=r"probe report .*probe.json is damaged \(its tasks "
                                         r"lack .*\); run `workbench probe --overwrite`"):
        load_probe_report(path)
    good = {"city": {"kind": "facts", "best_layer": 1,
                     "layers": [{"layer": 1, "selectivity": 0.4}]},
            "pos": {"kind": "syntax"}}
    path.write_text(json.dumps({"schema": "workbench.probe/1", "tasks": good}))
    assert load_probe_report(path)["tasks"] == good


def test_the_fix_for_a_damaged_own_probe_report_names_no_flag_not_given(tmp_path: Path) -> None:
    from beliefs.suite import load_probe_report

    path = tmp_path / "probe.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"or move .*probe.json away \(the model's own probe "
                                         r"report, read when --probes is not given\)"):
        load_probe_report(path, given=False)
    with pytest.raises(ValueError, match=r"or leave out --probes$"):
        load_probe_report(path, given=True)
