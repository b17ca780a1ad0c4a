"""Sparse dictionaries: architectures, the row stream, training (recovery of planted
directions, resume), the SAELens layout, and the truth metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from features.dictionary import ARCHS, BATCH_TOPK, SAELENS_ARCH, Dictionary, DictionaryConfig
from features.io import load_dictionary, save_dictionary
from features.stream import RowStream
from features.train import TrainConfig, train_dictionary
from features.truth import SparseCodes, absorption, best_latents, best_units


def planted(n: int = 12_000, d: int = 16, m: int = 32, active: int = 3, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are sums of `active` of `m` unit directions with positive weights."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(m, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    which = np.stack([rng.choice(m, active, replace=False) for _ in range(n)])
    weights = rng.uniform(0.5, 2.0, size=(n, active))
    x = np.einsum("na,nad->nd", weights, dirs[which]).astype(np.float32)
    return x, dirs


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_encodes_and_decodes(arch: str) -> None:
    d = Dictionary(DictionaryConfig(arch=arch, d_in=8, d_sae=32, k=4),
                   generator=torch.Generator().manual_seed(0))
    x = torch.randn(64, 8)
    f = d.activate(d.pre_acts(x), train=True)
    assert f.shape == (64, 32) and (f >= 0).all()
    if arch == "topk":
        assert int((f > 0).sum(-1).max()) <= 4
    if arch in BATCH_TOPK:  # k per row on average over the batch, not per row
        assert int((f > 0).sum()) <= 4 * 64
    f, x_hat = d(x)
    assert x_hat.shape == (64, 8)


def test_matryoshka_prefixes_reconstruct_alone_and_the_last_is_the_whole() -> None:
    from features.train import fvu, nested_fvu, prefixes

    assert prefixes(2048, 32) == [64, 128, 256, 512, 1024, 2048]
    assert prefixes(64, 20) == [32, 64] and prefixes(8, 16) == [8]
    d = Dictionary(DictionaryConfig(arch="matryoshka", d_in=8, d_sae=64, k=4),
                   generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 8)
    f = torch.relu(torch.randn(32, 64))
    loss, x_hat = nested_fvu(d, f, y)
    torch.testing.assert_close(x_hat, d.decode(f))
    firsts = [fvu(f[:, :m] @ d.W_dec[:m] + d.b_dec, y) for m in prefixes(64, 4)]
    torch.testing.assert_close(loss, torch.stack(firsts).mean())
    assert SAELENS_ARCH["matryoshka"] == "jumprelu"  # used as a BatchTopK: a threshold


def test_jumprelu_threshold_learns_through_the_straight_through_estimator() -> None:
    d = Dictionary(DictionaryConfig(arch="jumprelu", d_in=4, d_sae=8))
    pre = torch.full((10, 8), 1e-3 + 2e-4, requires_grad=True)  # within the kernel's width
    d.activate(pre, train=True).sum().backward()
    assert d.threshold.grad is not None and (d.threshold.grad != 0).any()


def test_folded_dictionary_reads_raw_activations() -> None:
    d = Dictionary(DictionaryConfig(arch="topk", d_in=8, d_sae=32, k=4),
                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d.b_dec.normal_()
        d.b_enc.normal_()
    x, s = torch.randn(16, 8), 0.3
    f_scaled, recon_scaled = d(x * s)
    f_raw, recon_raw = d.folded(s, s)(x)
    assert torch.allclose(f_raw, f_scaled, atol=1e-5)
    assert torch.allclose(recon_raw, recon_scaled / s, atol=1e-5)


def test_stream_resumes_and_visits_every_row_once_per_epoch() -> None:
    x = np.arange(1000, dtype=np.float32)[:, None]
    y = -x
    s = RowStream([x, y], batch_size=100, seed=3, block_rows=64, blocks_per_buffer=3)
    it = s.batches(0)
    epoch = [next(it) for _ in range(10)]
    seen = torch.cat([b[0] for b in epoch])[:, 0]
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(torch.equal(b[1], -b[0]) for b in epoch)  # both sources at the same rows
    resumed = next(s.batches(7))
    assert torch.equal(resumed[0], epoch[7][0])
    assert not torch.equal(next(s.batches(10))[0], epoch[0][0])  # epoch 2 reshuffled


def _meta() -> dict:
    return {"model": "m", "model_checksum": "c", "hook": "blocks.0.hook_resid_post",
            "target": None, "corpus": "w", "split": "train", "n_ctx": 8}


@pytest.mark.parametrize("arch, rows, sparsity, max_err, min_found", [
    ("topk", 150_000, None, 0.15, 0.8), ("batchtopk", 300_000, None, 0.15, 0.7),
    ("relu", 300_000, 0.1, 0.3, 0.7), ("jumprelu", 400_000, 0.05, 0.2, 0.5)])
def test_training_recovers_planted_directions(arch: str, rows: int, sparsity: float | None,
                                              max_err: float, min_found: float, tmp_path
                                              ) -> None:
    """32 planted directions in 16 dimensions, 3 active per row: a linear encoder cannot
    separate them exactly (they overlap), so the error floor is ~0.1 for TopK."""
    x, dirs = planted()
    cfg = TrainConfig(arch=arch, expansion=2, k=3, tokens=rows, batch_size=256, lr=3e-3,
                      sparsity=sparsity, dead_rows=20_000, log_every=50)
    final = train_dictionary([x], cfg, tmp_path / "d", meta=_meta(), progress=False)
    d, meta = load_dictionary(tmp_path / "d")
    with torch.no_grad():
        xs = torch.from_numpy(x[:2000])
        f, x_hat = d(xs)
        err = float((x_hat - xs).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum())
        cos = torch.from_numpy(dirs).float() @ (d.W_dec / d.W_dec.norm(dim=-1,
                                                                      keepdim=True)).T
    l0 = float((f > 0).sum(-1).float().mean())
    found = float((cos.max(1).values > 0.9).float().mean())  # a decoder row per direction
    assert err < max_err and l0 < 6 and found >= min_found, (arch, err, l0, found, final)
    assert meta["train"]["arch"] == arch and (tmp_path / "d" / "training.fig.json").exists()
    assert final["init_cosine_median"] < 0.9  # the decoder left its random start


def test_matryoshka_prefixes_reconstruct_on_their_own_where_batchtopk_does_not(tmp_path
                                                                               ) -> None:
    """The same planted data, BatchTopK and Matryoshka: both reconstruct it, but only
    Matryoshka's first half of latents (and first quarter) reconstructs it alone."""
    from features.train import fvu

    x, _ = planted()
    xs = torch.from_numpy(x[:2000])
    alone = {}
    for arch in ("batchtopk", "matryoshka"):
        cfg = TrainConfig(arch=arch, expansion=4, k=3, tokens=200_000, batch_size=256,
                          lr=3e-3, dead_rows=20_000, log_every=50)
        train_dictionary([x], cfg, tmp_path / arch, meta=_meta(), progress=False)
        d, _ = load_dictionary(tmp_path / arch)
        with torch.no_grad():
            f = d.encode(xs)
            assert float(fvu(d.decode(f), xs)) < 0.2, arch
            alone[arch] = [float(fvu(f[:, :m] @ d.W_dec[:m] + d.b_dec, xs)) for m in (16, 32)]
    assert all(m < b - 0.1 for m, b in zip(alone["matryoshka"], alone["batchtopk"],
                                           strict=True)), alone


def test_interrupted_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch
                                                                   ) -> None:
    import features.train as T

    x, _ = planted(n=4000)
    cfg = TrainConfig(arch="topk", expansion=2, k=3, tokens=40 * 128, batch_size=128,
                      ckpt_every=10, log_every=5, lr=1e-3)
    train_dictionary([x], cfg, tmp_path / "whole", meta=_meta(), progress=False)
    calls = {"n": 0}
    real = T.losses

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 26:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "losses", dying)
    with pytest.raises(KeyboardInterrupt):
        train_dictionary([x], cfg, tmp_path / "cut", meta=_meta(), progress=False)
    assert (tmp_path / "cut.partial" / "checkpoint.json").exists()
    assert not (tmp_path / "cut").exists()
    monkeypatch.setattr(T, "losses", real)
    train_dictionary([x], cfg, tmp_path / "cut", meta=_meta(), resume=True, progress=False)
    a, b = (load_file(str(tmp_path / n / "sae_weights.safetensors")) for n in ("whole", "cut"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    curve = [json.loads(line) for line in (tmp_path / "cut" / "training.jsonl").open()]
    assert [p["step"] for p in curve] == sorted({p["step"] for p in curve})  # none twice


def test_saelens_layout(tmp_path) -> None:
    d = Dictionary(DictionaryConfig(arch="batchtopk", d_in=8, d_sae=16, k=2))
    d.batch_threshold.fill_(0.25)
    save_dictionary(d, tmp_path, _meta())
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["d_sae"] == 16
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert tensors["W_enc"].shape == (8, 16) and tensors["W_dec"].shape == (16, 8)
    assert torch.allclose(tensors["threshold"], torch.full((16,), 0.25))
    loaded, _ = load_dictionary(tmp_path)
    x = torch.randn(4, 8)
    assert torch.allclose(loaded.encode(x), d.encode(x))


def test_damaged_or_missing_dictionary_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="workbench sae train"):
        load_dictionary(tmp_path / "nothing")
    d = Dictionary(DictionaryConfig(arch="topk", d_in=8, d_sae=16, k=2))
    save_dictionary(d, tmp_path / "d", _meta())
    path = tmp_path / "d" / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged"):
        load_dictionary(tmp_path / "d")


def test_out_of_range_k_and_expansion_are_refused() -> None:
    with pytest.raises(ValueError, match="k 40 is out of range"):
        DictionaryConfig(arch="topk", d_in=2, d_sae=32, k=40)
    with pytest.raises(ValueError, match="expansion 0"):
        TrainConfig(expansion=0)


def test_best_latent_and_unit_f1() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    # latent 2 fires exactly on class 1; latent 0 on every row
    rows = np.array([0, 1, 2, 3, 4, 5, 2, 3, 4])
    lat = np.array([0, 0, 0, 0, 0, 0, 2, 2, 2])
    codes = SparseCodes(rows, lat, np.ones(9), n_rows=6, n_latents=4)
    best = best_latents(codes, y, 2)
    assert best[1]["latent"] == 2 and best[1]["f1"] == 1.0 and best[1]["auroc"] == 1.0
    assert best[0]["latent"] == 0 and best[0]["f1"] == pytest.approx(2 * 3 / (6 + 3))
    x = np.stack([np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.3]), np.zeros(6)], axis=1)
    units = best_units(x, y, 2)
    assert units[1] == {"unit": 0, "sign": 1, "f1": 1.0, "auroc": 1.0, "n": 3}
    assert units[0]["sign"] == -1 and units[0]["f1"] == 1.0  # low values mean class 0


def test_absorption_counts_general_rows_taken_by_a_specific_latent() -> None:
    general = np.array([0, 0, 0, 0])  # one country
    specific = np.array([0, 0, 1, 1])  # two of its cities
    # the country latent 5 fires on rows 0-1 only; city 1's latent 7 fires on rows 2-3
    codes = SparseCodes(np.array([0, 1, 2, 3]), np.array([5, 5, 7, 7]), np.ones(4), 4, 8)
    got = absorption(codes, general, specific, general_best=[5], specific_best=[6, 7])
    assert got == [{"value": 0, "n": 4, "missed": 0.5, "absorbed": 0.5}]


def test_the_evaluation_keeps_the_analysis_protocol() -> None:
    import features.evaluate
    from workbench.analysis import protocol_problems

    assert protocol_problems(features.evaluate) == []
