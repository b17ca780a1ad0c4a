"""Latent clamping (`workbench beliefs --method sae`) on a tiny random model and a random
dictionary: where the clamp acts, that a clamp to the values already there changes nothing,
that it is undone, which latents are chosen, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from beliefs.elicit import candidate_logprobs
from beliefs.factbase import FactBase
from beliefs.latent import (
    LatentConfig,
    LatentEdit,
    SubjectCodes,
    choose_latents,
    hook_layer,
    latent_edit,
)
from beliefs.steering import subject_positions
from beliefs.suite import BeliefsConfig, latent_codes, load_latent_dictionary
from features.dictionary import Dictionary, DictionaryConfig
from features.io import find_dictionary, save_dictionary
from workbench.hooks import weights_checksum

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    torch.manual_seed(1)
    return Dictionary(DictionaryConfig(arch="relu", d_in=32, d_sae=64)).eval()


def test_positions_and_hook_layers() -> None:
    tokens = torch.tensor([[1, 5, 6, 7, 5, 6], [1, 7, 7, 7, 7, 7]])
    assert subject_positions(tokens, [[5, 6]], "last") == ([0, 0], [2, 5])
    assert hook_layer("blocks.3.hook_resid_post") == 3 and hook_layer("hook_embed") is None
    with pytest.raises(ValueError, match=r"LatentConfig.positions=\('middle',\)"):
        LatentConfig(positions=("middle",))
    with pytest.raises(ValueError, match="LatentConfig.n_latents"):
        LatentConfig(n_latents=(0,))


def test_choose_latents_takes_only_positive_differences() -> None:
    new = torch.tensor([3.0, 0.0, 1.0, 0.0, 0.5])
    old = torch.tensor([0.0, 2.0, 1.0, 0.1, 0.0])
    up, down, gap = choose_latents(new[None], old[None], 3)
    assert up.tolist() == [0, 4] and down.tolist() == [1, 3]  # latent 2 differs by nothing
    torch.testing.assert_close(gap, torch.tensor([3.0, 0.5]))


def test_a_clamp_to_the_values_there_changes_nothing_and_another_moves_only_the_subject(
        model, base: FactBase, dictionary: Dictionary) -> None:  # noqa: ANN001
    b = base.beliefs(["city"], n=1)[0]
    other = base.neighbours(b, 1)[0]
    prompts = [b.prompts[0], other.prompts[0]]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clean = candidate_logprobs(model, prompts, b.candidates)
    codes = SubjectCodes(model, base, dictionary, HOOK)
    own = codes.code(b.subject, b.relation)  # the prompt's code at the subject's last token
    latents = torch.arange(64)
    same = LatentEdit(HOOK, dictionary, latents, own[latents], b.subject, "last")
    with same.applied(model):
        torch.testing.assert_close(candidate_logprobs(model, prompts, b.candidates), clean)
    moved = LatentEdit(HOOK, dictionary, latents[:4], own[:4] + 20.0, b.subject, "last")
    assert moved.layer == 0 and moved.norm() > 0
    with moved.applied(model):
        clamped = candidate_logprobs(model, prompts, b.candidates)
    assert not torch.allclose(clamped[0], clean[0])  # the subject's prompt moves
    torch.testing.assert_close(clamped[1], clean[1])  # another subject's does not
    torch.testing.assert_close(candidate_logprobs(model, prompts, b.candidates), clean)
    copy = moved.copy_applied(model)
    torch.testing.assert_close(candidate_logprobs(copy, prompts, b.candidates), clamped)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_edit_clamps_the_contrasting_latents_to_the_new_sides_values(
        model, base: FactBase, dictionary: Dictionary) -> None:  # noqa: ANN001
    codes = SubjectCodes(model, base, dictionary, HOOK)
    b = next(x for x in base.beliefs(["city"])  # one whose new and old objects others hold
             if min(codes.sides(x, base.new_object(x), 32)[2].values()) > 0)
    new = base.new_object(b)
    new_codes, old_codes, _ = codes.sides(b, new, 32, "after")  # codes at the prompt's end
    mean_new, mean_old = new_codes.mean(0), old_codes.mean(0)
    edit = latent_edit(codes, b, new, 2, 3.0, "after")
    n_up = len(edit.info["new_latents"])
    assert edit.info["position"] == "after" and edit.info["hook"] == HOOK
    up = torch.tensor(edit.info["new_latents"], dtype=torch.long)
    assert bool(((mean_new - mean_old)[up] > 0).all())
    torch.testing.assert_close(edit.values[:n_up], 3.0 * mean_new[up])
    down = edit.latents[n_up:]
    torch.testing.assert_close(edit.values[n_up:], mean_new[down])  # switched to the new side


def test_the_dictionary_is_found_checked_and_refused_in_one_line(
        model, base: FactBase, dictionary: Dictionary, tmp_path: Path) -> None:  # noqa: ANN001
    from workbench.models.refs import ModelRef

    run = tmp_path / "run"
    (run / "sae").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no sparse dictionary"):
        find_dictionary(run, None, "run")
    meta = {"model": "run", "model_checksum": weights_checksum(model), "hook": HOOK}
    save_dictionary(dictionary, run / "sae" / "a", meta)
    assert find_dictionary(run, None, "run") == run / "sae" / "a"
    save_dictionary(dictionary, run / "sae" / "b", meta | {"model_checksum": "0" * 64})
    with pytest.raises(ValueError, match=r"2 dictionaries under .* \(a, b\); pass --sae DIR"):
        find_dictionary(run, None, "run")
    ref = ModelRef.of(str(run))
    with pytest.raises(ValueError, match="--sae x is read only by --method sae"):
        load_latent_dictionary(ref, BeliefsConfig(), "x")
    assert load_latent_dictionary(ref, BeliefsConfig(), None) is None
    sae_only = BeliefsConfig(methods=("sae",))
    good = load_latent_dictionary(ref, sae_only, run / "sae" / "a")
    assert good is not None and good[1]["path"] == str(run / "sae" / "a")
    assert isinstance(latent_codes(model, base, good), SubjectCodes)
    other = load_latent_dictionary(ref, sae_only, run / "sae" / "b")
    with pytest.raises(ValueError, match="trained on another model's activations"):
        latent_codes(model, base, other)
    meta_file = run / "sae" / "a" / "workbench.json"
    wrong = json.loads(meta_file.read_text()) | {"hook": "blocks.5.hook_resid_post"}
    with pytest.raises(ValueError, match="clamps an autoencoder of one of this model's"):
        latent_codes(model, base, (good[0], wrong))
    with pytest.raises(ValueError, match="--method sae needs a sparse dictionary"):
        latent_codes(model, base, None)
