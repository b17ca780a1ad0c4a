"""The parts of `attribution` that need no trained model: EK-FAC's batches and its factor
store's refusals, the weights digest, the method list, the LDS arithmetic and the
retraining verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attribution.ekfac import EkfacConfig, FactorStore, collate, tracked_modules, weights_digest
from attribution.lds import LdsConfig, bootstrap, lds
from attribution.methods import check_methods
from attribution.verify import VerifyConfig, verdicts


def test_collate_pads_right_and_masks() -> None:
    batch = collate([{"input_ids": torch.tensor([5, 6, 7])}, {"input_ids": torch.tensor([8])}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["lengths"].tolist() == [3, 1] and "target" not in batch
    queries = collate([{"input_ids": torch.tensor([1, 2]), "target": torch.tensor(9)}])
    assert queries["target"].tolist() == [9]


def test_tracked_modules_are_the_mlps_linear_layers() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(4, 4)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))

    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([Block(), Block()])
    model.unembed = torch.nn.Linear(4, 10)
    assert tracked_modules(model, "mlp") == ["blocks.0.mlp.0", "blocks.0.mlp.1",
                                             "blocks.1.mlp.0", "blocks.1.mlp.1"]
    assert "blocks.0.attn" in tracked_modules(model, "all")
    assert "unembed" not in tracked_modules(model, "all")
    with pytest.raises(ValueError, match="no linear layer"):
        tracked_modules(torch.nn.Sequential(torch.nn.ReLU()), "mlp")


def test_the_factor_store_refuses_other_weights_corpus_and_settings(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    digest = weights_digest(model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    assert weights_digest(model) != digest and len(digest) == 64
    store, cfg = FactorStore(tmp_path / "f"), EkfacConfig(fit_documents=100)
    store.check(digest, "world:1000", cfg)  # nothing there yet: nothing to refuse
    store.write_meta(digest, "world:1000", cfg)
    store.check(digest, "world:1000", EkfacConfig(fit_documents=100, batch_size=8))
    with pytest.raises(ValueError, match="made for other weights"):
        store.check(weights_digest(model), "world:1000", cfg)
    with pytest.raises(ValueError, match="were fitted on corpus"):
        store.check(digest, "other:5", cfg)
    with pytest.raises(ValueError, match="were fitted with"):
        store.check(digest, "world:1000", EkfacConfig(fit_documents=200))


def test_configs_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        EkfacConfig(params="heads")
    with pytest.raises(ValueError, match="damping"):
        EkfacConfig(damping=0.0)
    with pytest.raises(ValueError, match="choose from"):
        check_methods(["influence"])
    with pytest.raises(ValueError, match="2 or more"):
        LdsConfig(subsets=1)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        LdsConfig(fraction=1.0)
    with pytest.raises(ValueError, match="distinct training seeds"):
        VerifyConfig(seeds=(1, 1))


def test_lds_is_one_for_a_perfect_datamodel_and_its_interval_holds_it() -> None:
    rng = np.random.default_rng(0)
    kept = rng.random((40, 30)) < 0.5
    scores = rng.normal(size=(3, 30))
    loss = -(kept @ scores.T)
    result = lds(scores, kept, loss)
    assert result["per_query"] == [1.0, 1.0, 1.0] and result["mean"] == 1.0
    noisy = loss + rng.normal(scale=3.0, size=loss.shape)
    lo, hi = bootstrap(scores, kept, noisy, 200, 0)
    assert lo <= lds(scores, kept, noisy)["mean"] <= hi < 1.0
    assert lds(np.zeros((1, 30)), kept, loss[:, :1])["mean"] is None  # constant prediction


def test_verdicts_compare_each_method_with_bm25_and_random() -> None:
    conds = {"none": {"margin": 4.0, "accuracy": 1.0, "chance": 0.1},
             "ekfac": {"margin": 3.5, "accuracy": 1.0, "chance": 0.1},
             "bm25": {"margin": 3.0, "accuracy": 0.9, "chance": 0.1},
             "random": {"margin": 4.1, "accuracy": 1.0, "chance": 0.1},
             "mentions": {"margin": 0.5, "accuracy": 0.4, "chance": 0.1}}
    v = verdicts({"1": conds})["1"]
    assert v["drop"]["ekfac"] == pytest.approx(0.5) and v["ekfac"]["beats_bm25"] is False
    assert v["ekfac"]["vs_random"] is None  # random raised the margin: no ratio
    assert v["ekfac"]["at_least_3x_random"] is True and v["mentions_at_chance"] is False
