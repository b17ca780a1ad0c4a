"""probe/: tasks and their rows, folds without leakage, control labels, intervals, center of
gravity, the batched probe trainer, and word alignment for sub-word tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from probe.fit import ProbeConfig, fit_predict, standardize
from probe.layers import LayersConfig, probe_task, select_examples
from probe.rows import check_layers
from probe.stats import (
    assign_folds,
    bootstrap_ci,
    center_of_gravity,
    control_labels,
    majority_accuracy,
)
from probe.tasks import TASKS, Examples, first_mentions, resolve_tasks, task_examples
from workbench.world.retokenize import align_words


def test_resolve_tasks_expands_suites_and_rejects_unknown() -> None:
    assert [t.name for t in resolve_tasks("semantics")] == ["category", "animacy", "sentiment"]
    assert [t.name for t in resolve_tasks("pos,pos,city")] == ["pos", "city"]
    with pytest.raises(ValueError, match="unknown probe task 'colour'.*suites"):
        resolve_tasks("syntax,colour")


def test_first_mentions_end_of_name_first_time_per_document() -> None:
    #            doc 0: A A x A A x B B | doc 1: A A
    person = np.array([5, 5, -1, 5, 5, -1, 7, 7, 5, 5])
    doc = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    assert first_mentions(person, doc).tolist() == [1, 7, 9]


def test_task_examples_word_and_fact_tasks() -> None:
    from workbench.world import WorldConfig, build_world

    world = build_world(WorldConfig(seed=0, n_people=3))
    labels = {"pos": np.array([-1, 0, 2, 2]), "person": np.array([-1, 1, 1, -1]),
              "depth": np.array([-1, 2, 9, 3])}
    ex = task_examples(TASKS["pos"], labels, np.zeros(4, int), np.array([9, 4, 5, 5]), world)
    assert ex.rows.tolist() == [1, 2, 3] and ex.groups.tolist() == [4, 5, 5]
    depth = task_examples(TASKS["depth"], labels, np.zeros(4, int), np.arange(4), world)
    assert depth.y.tolist() == [2, 6, 3]  # 9 merges into "6+"
    city = task_examples(TASKS["city"], labels, np.zeros(4, int), np.arange(4), world)
    assert city.rows.tolist() == [2] and city.groups.tolist() == [1]
    assert city.classes[city.y[0]] == world.attribute(1, "city")
    with pytest.raises(ValueError, match="lack.*world corpus"):
        task_examples(TASKS["sentiment"], labels, np.zeros(4, int), np.arange(4), world)


def test_group_folds_never_split_a_group_and_cover_every_class() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 60, size=2000)
    y = groups % 3  # a group's label is fixed (a word type's class)
    folds = assign_folds(y, groups, 5, "group", seed=0)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1  # no leakage across folds
    for k in range(5):
        assert set(y[folds == k]) == {0, 1, 2}
    rand = assign_folds(y, groups, 5, "random", seed=0)
    assert max(len(np.unique(rand[groups == g])) for g in np.unique(groups)) > 1
    with pytest.raises(ValueError, match="split='types'"):
        assign_folds(y, groups, 5, "types", seed=0)


def test_control_labels_are_per_group_with_the_task_distribution() -> None:
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 400, size=20_000)
    y = (groups % 4 == 0).astype(int)  # 25 % class 1
    ctrl = control_labels(y, groups, 2, seed=0)
    for g in np.unique(groups)[:50]:
        assert len(np.unique(ctrl[groups == g])) == 1
    assert abs(ctrl.mean() - y.mean()) < 0.06
    assert (ctrl != y).any()


def test_bootstrap_interval_and_majority() -> None:
    correct = np.array([1, 1, 1, 0] * 50, dtype=float)
    groups = np.repeat(np.arange(20), 10)
    lo, hi = bootstrap_ci(correct, groups, seed=0)
    assert lo <= 0.75 <= hi and hi - lo < 0.2
    assert np.allclose(bootstrap_ci(correct, groups, seed=0), (lo, hi))
    y = np.array([0, 0, 0, 1, 1, 2])
    assert majority_accuracy(y, np.array([0, 1, 2, 0, 1, 2])) == pytest.approx(0.5)


def test_center_of_gravity() -> None:
    assert center_of_gravity([0.2, 0.2, 0.9]) == 2.0
    assert center_of_gravity([0.9, 0.5, 0.4]) == 0.0
    assert center_of_gravity([0.2, 0.6, 0.8, 0.7]) == pytest.approx(4 / 3, abs=1e-3)
    assert center_of_gravity([0.1, 0.3], layers=[2, 4]) == 4.0


def test_check_layers() -> None:
    assert check_layers(None, 2) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"layers \[0, 7\]: out of range.*0 \(embedding\) to 4"):
        check_layers([0, 7], 4)


def _xor_data(n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    return x, y


def test_mlp_probe_learns_what_linear_cannot() -> None:
    x, y = _xor_data()
    xs = standardize(x[None])
    folds = torch.arange(len(y)) % 5
    train, val = (folds < 3)[None], (folds == 3)[None]
    test = folds == 4
    accs = {}
    for kind in ("linear", "mlp"):
        logits = fit_predict(xs, y[None], train, val, 2,
                             ProbeConfig(probe=kind, l2=1e-4, max_epochs=150, patience=20,
                                         hidden=32))
        accs[kind] = float((logits[0, 0].argmax(-1)[test] == y[test]).float().mean())
    assert accs["mlp"] > 0.85 and accs["linear"] < 0.7, accs


def test_fit_predict_is_deterministic_and_variants_independent() -> None:
    x, y = _xor_data(300)
    xs = standardize(torch.stack([x, x[:, [0, 0, 2, 3]]]))
    y2 = torch.stack([y, (x[:, 0] > 0).long()])
    folds = torch.arange(300) % 5
    train = torch.stack([folds < 3] * 2)
    val = torch.stack([folds == 3] * 2)
    cfg = ProbeConfig(l2=1e-4, max_epochs=30)
    a = fit_predict(xs, y2, train, val, 2, cfg)
    b = fit_predict(xs, y2, train, val, 2, cfg)
    assert torch.equal(a, b)
    solo = fit_predict(xs, y2[1:], train[1:], val[1:], 2, cfg)
    acc = lambda lg: float((lg.argmax(-1) == y2[1]).float().mean())  # noqa: E731
    assert abs(acc(solo[0, 0]) - acc(a[1, 0])) < 0.03  # the other variant does not interfere
    assert acc(a[1, 0]) > 0.95


def test_linear_probes_train_each_on_its_own_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import probe.fit as train_mod

    g = torch.Generator().manual_seed(0)
    x = standardize(torch.randn(2, 400, 6, generator=g))
    y = torch.stack([(x[1, :, 0] > 0).long(), torch.randint(0, 3, (400,), generator=g)])
    folds = torch.arange(400) % 4
    train = torch.stack([folds != 0, folds != 1])  # two row groups shared, one each alone
    val = torch.zeros_like(train)
    both = fit_predict(x, y, train, val, 3, ProbeConfig(l2=1e-4))
    # logits reach ~20 and the fits stop at a gradient tolerance: compare relatively (a CI run
    # on a loaded 2-core machine differed by 1.2e-3 at a logit of 8.7; mixing the two variants'
    # rows moves logits by whole units)
    for v in range(2):  # batched (rows grouped by their variants) == alone
        alone = fit_predict(x, y[v:v + 1], train[v:v + 1], val[v:v + 1], 3, ProbeConfig(l2=1e-4))
        assert torch.allclose(both[v], alone[0], rtol=1e-3, atol=1e-3)
    monkeypatch.setattr(train_mod, "MAX_ROW_GROUPS", 1)  # one masked row set instead
    assert torch.allclose(fit_predict(x, y, train, val, 3, ProbeConfig(l2=1e-4)), both,
                          rtol=1e-3, atol=1e-3)
    acc = (both[0, 1].argmax(-1) == y[0])[folds == 0].float().mean()
    assert acc > 0.95


def _examples(n_groups: int = 40, per: int = 20) -> Examples:
    groups = np.repeat(np.arange(n_groups), per)
    return Examples(np.arange(len(groups)), groups % 2, groups, ["a", "b"])


def test_probe_task_finds_a_signal_and_its_control_does_not() -> None:
    ex = _examples()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, len(ex.y), 16, generator=g)
    noise[1, :, 0] += torch.from_numpy(ex.y * 3.0).float()  # layer 1 encodes the class
    res = probe_task(noise, ex, [0, 1], LayersConfig(n_boot=200))
    l0, l1 = res["layers"]
    assert l1["accuracy"] > 0.9 and l0["accuracy"] < 0.65
    assert l1["selectivity"] > 0.3 and l1["ci"][0] <= l1["accuracy"] <= l1["ci"][1]
    assert res["best_layer"] == 1 and res["center_of_gravity"] == 1.0


def test_select_examples_errors_and_drops() -> None:
    from probe.rows import ProbeRows

    n = 60
    labels = {"animacy": np.array([0] * 55 + [1] * 5)}
    tokens = np.array(list(np.arange(55) % 12) + [20, 21, 20, 21, 20])
    meta = {"doc": np.zeros(n, int), "token": tokens, "offset": np.arange(n)}
    rows = ProbeRows(labels, meta, 2)
    with pytest.raises(ValueError, match=r"task 'animacy': 1 class\(es\) with at least 10 "
                       r"examples in split 'val' \(\{'animate': 55\}"):
        select_examples(TASKS["animacy"], rows, None, LayersConfig())  # class 1: 2 word types
    labels["animacy"] = np.array([0] * 52 + [1] * 8)
    meta["token"] = np.array(list(np.arange(52) % 12) + [20, 21, 22, 23] * 2)
    # 8 rows of 'inanimate' (4 word types): too few for 10 per class; with two classes only,
    # dropping it leaves one: an error naming the counts and the fix
    with pytest.raises(ValueError, match=r"\{'animate': 52, 'inanimate': 8\}; those with "
                       r"fewer than 10 examples are dropped\), two are needed; probe more text"):
        select_examples(TASKS["animacy"], rows, None, LayersConfig())
    ex, dropped = select_examples(TASKS["animacy"], rows, None, LayersConfig(min_per_class=5))
    assert dropped == [] and len(ex.y) == 60


def test_select_examples_drops_small_classes_and_keeps_the_rest() -> None:
    """A class with fewer than `min_per_class` rows is left out (named in `dropped_classes`)
    while two or more remain; the rows of the kept classes are those it would keep anyway."""
    from probe.rows import ProbeRows

    y = np.array([0] * 30 + [1] * 30 + [2] * 6)  # 'neutral' (2): 6 rows of 3 word types
    tokens = np.array(list(np.arange(30) % 10) + list(10 + np.arange(30) % 10) + [20, 21, 22] * 2)
    rows = ProbeRows({"sentiment": y}, {"doc": np.zeros(len(y), int), "token": tokens,
                                        "offset": np.arange(len(y))}, 2)
    ex, dropped = select_examples(TASKS["sentiment"], rows, None, LayersConfig())
    names = list(TASKS["sentiment"].classes)
    assert dropped == [names[2]] and ex.classes == names[:2]
    assert ex.rows.tolist() == list(range(60)) and ex.y.tolist() == [0] * 30 + [1] * 30
    kept, none = select_examples(TASKS["sentiment"], rows, None, LayersConfig(min_per_class=6))
    assert none == [] and kept.classes == names and len(kept.y) == len(y)


def test_align_words_last_subtoken() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["the cat sat ."] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    words = ["the", "velmora", "cat", "."]
    ids, last = align_words(words, tok)
    pieces = [tok.id_to_token(i) for i in ids]
    assert last.tolist() == sorted(last.tolist()) and last[-1] == len(ids) - 1
    # the tokens up to each word's last sub-token spell the text up to that word
    for w, j in enumerate(last):
        assert "".join(pieces[: j + 1]).replace("Ġ", " ") == " ".join(words[: w + 1])


def test_per_variant_l2_equals_separate_runs() -> None:
    ex = _examples()
    g = torch.Generator().manual_seed(1)
    x = standardize(torch.randn(2, len(ex.y), 8, generator=g))
    y = torch.from_numpy(ex.y)[None].repeat(2, 1)
    train = torch.arange(len(ex.y))[None].repeat(2, 1) % 5 < 3
    val = torch.zeros_like(train)
    both = fit_predict(x, y, train, val, 2, ProbeConfig(l2=(1e-4, 1.0)),
                       l2=torch.tensor([1e-4, 1.0]))
    for v, l2 in enumerate((1e-4, 1.0)):
        alone = fit_predict(x, y[:1], train[:1], val[:1], 2, ProbeConfig(l2=l2))
        assert torch.allclose(both[v], alone[0], atol=1e-3)
    assert both[1].abs().max() < both[0].abs().max()  # the strong penalty shrinks
    with pytest.raises(ValueError, match="a grid needs one value per variant"):
        fit_predict(x, y, train, val, 2, ProbeConfig(l2=(1e-4, 1.0)))


def test_probe_task_chooses_l2_on_validation_rows() -> None:
    groups = np.repeat(np.arange(40), 20)
    ex = Examples(np.arange(len(groups)), (groups % 10 < 3).astype(np.int64), groups, ["a", "b"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, len(ex.y), 16, generator=g)
    x[0, :, 0] += torch.from_numpy(ex.y * 3.0).float()
    grid = (1e-4, 100.0)  # a penalty of 100 leaves only the bias: the majority class (70 %)
    res = probe_task(x, ex, [0], LayersConfig(n_boot=50, probe=ProbeConfig(l2=grid)))
    alone = {l2: probe_task(x, ex, [0], LayersConfig(n_boot=50, probe=ProbeConfig(l2=l2)))
             for l2 in grid}
    assert alone[1e-4]["layers"][0]["accuracy"] > 0.9 > alone[100.0]["layers"][0]["accuracy"]
    assert res["layers"][0] == {**alone[1e-4]["layers"][0], "l2": [1e-4] * 5}
    # the control probes use their fold's chosen L2, not their own best
    assert res["layers"][0]["control_accuracy"] == alone[1e-4]["layers"][0]["control_accuracy"]


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
def test_linear_probes_reach_scikit_learns_optimum_on_correlated_features(l2: float) -> None:
    """The preconditioned L-BFGS (`probe.fit.Eigenbasis`) solves the same problem as
    scikit-learn's multinomial `LogisticRegression` with C = 1 / (l2 n): on features with a
    strong shared component (what a wide residual stream looks like) both give the same
    probabilities, for weak and strong penalties."""
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(0)
    n, d, c = 400, 48, 3
    shared = torch.randn(n, 4, generator=gen) @ torch.randn(4, d, generator=gen)
    x = shared + 0.2 * torch.randn(n, d, generator=gen)
    y = (x[:, :3] @ torch.randn(3, c, generator=gen)).argmax(1)
    x = standardize(x[None])
    train = torch.ones(1, n, dtype=torch.bool)
    logits = fit_predict(x, y[None], train, train, c,
                         ProbeConfig(l2=l2, max_iter=2000, precondition=True))
    ours = torch.softmax(logits[0, 0].double(), -1)
    ref = LogisticRegression(C=1 / (l2 * n), tol=1e-10, max_iter=20_000).fit(
        x[0].double().numpy(), y.numpy())
    theirs = torch.from_numpy(ref.predict_proba(x[0].double().numpy()))
    assert (ours - theirs).abs().max() < 1e-2  # the fitter without preconditioning: 0.03 at 1e-4


@pytest.mark.parametrize(("d", "setting", "used"), [(64, None, False), (512, None, True),
                                                    (512, False, False), (64, True, True)])
def test_preconditioning_by_default_from_gpt2_widths(d: int, setting: bool | None, used: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import probe.fit as fit

    calls = []
    real = fit.eigenbasis
    monkeypatch.setattr(fit, "eigenbasis", lambda *a: calls.append(1) or real(*a))
    n = int(fit.PRECONDITION_ROWS * d) + 8
    x = torch.randn(1, n, d, generator=torch.Generator().manual_seed(0))
    y = (x[0, :, 0] > 0).long()[None]
    train = torch.ones(1, n, dtype=torch.bool)
    fit.fit_predict(x, y, train, train, 2, fit.ProbeConfig(l2=1.0, max_iter=3,
                                                           precondition=setting))
    assert bool(calls) == used


def test_stopped_probes_ride_along_until_the_batch_is_compacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes that stop early stay in the batch unevaluated until `COMPACT` says otherwise:
    the fitted parameters are bit-identical whether the batch is compacted at every stop
    or never (each probe's L-BFGS sees the same numbers either way)."""
    import probe.fit as fit
    import probe.lbfgs as lbfgs

    gen = torch.Generator().manual_seed(0)
    x = standardize(torch.randn(2, 300, 16, generator=gen))
    y = torch.stack([(x[1, :, 0] > 0).long(), torch.randint(3, (300,), generator=gen)])
    train = torch.rand(2, 300, generator=gen) < 0.7
    l2 = torch.tensor([1e-3, 1.0])
    fitted = {}
    for share in (1.0, 0.0):  # compact at every stop (1.0), never (0.0)
        monkeypatch.setattr(lbfgs, "COMPACT", share)
        fitted[share] = fit.fit_predict(x, y, train, ~train, 3, ProbeConfig(max_iter=60), l2=l2)
    assert torch.equal(fitted[1.0], fitted[0.0])
