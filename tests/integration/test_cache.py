"""ActivationStore end to end: CLI, reader, resume after kill -9, refusals, HF models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from workbench.cache.store import ActivationStore, CacheConfig, cache_activations
from workbench.cli.core import main
from workbench.models.loader import load
from workbench.training.trainer import TrainResult
from workbench.world import build_text_corpus, load_corpus

RESID = "blocks.*.hook_resid_post"


def _contents(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def test_cache_matches_run_with_cache(tiny_run: TrainResult, world_corpus: Path,
                                      tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    # chunk: world documents can be longer than tiny's n_ctx of 64
    cfg = CacheConfig(hooks=(RESID, "blocks.0.attn.hook_z"), max_tokens=2000, batch_size=8,
                      chunk=True)
    path = cache_activations(model, corpus, cfg, tmp_path / "acts.h5", model_ref="tiny",
                             progress=False)
    with ActivationStore(path) as store:
        assert sorted(store.hooks) == ["blocks.0.attn.hook_z", "blocks.0.hook_resid_post",
                                       "blocks.1.hook_resid_post"]
        n = len(store)
        assert n == 2000 and store.shape("blocks.0.attn.hook_z") == (n, 4, 16)
        seq, pos, offset = store.meta("seq"), store.meta("pos"), store.meta("offset")
        tokens = corpus.tokens("val")
        assert np.array_equal(store.meta("token"), tokens[offset])
        labels = store.labels()
        assert np.array_equal(labels["pos"], corpus.labels("val")["pos"][offset])
        # the rows of sequence 3 equal a plain run_with_cache of that document
        rows = np.nonzero(seq == 3)[0]
        doc = torch.tensor(tokens[offset[rows]].astype(np.int64))[None]
        _, cache = model.run_with_cache(doc)
        got = store.get("blocks.1.hook_resid_post", rows[0], rows[-1] + 1)
        torch.testing.assert_close(got, cache["blocks.1.hook_resid_post"][0, pos[rows]])
        batches = list(store.iter_batches("blocks.0.hook_resid_post", batch_size=512))
        assert [len(b) for b in batches] == [512, 512, 512, 464]
        picked = store.take("blocks.0.hook_resid_post", np.array([7, 3]))
        torch.testing.assert_close(picked, store.get("blocks.0.hook_resid_post")[[7, 3]])
        assert store.attrs["model_checksum"] and store.attrs["complete"]


def test_float16_and_last_positions(tiny_run: TrainResult, world_corpus: Path,
                                    tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    full = cache_activations(model, corpus, CacheConfig(hooks=(RESID,), max_tokens=600, chunk=True),
                             tmp_path / "a.h5", progress=False)
    last = cache_activations(model, corpus, CacheConfig(hooks=(RESID,), max_tokens=600,
                             positions="last", dtype="float16", chunk=True), tmp_path / "b.h5",
                             progress=False)
    with ActivationStore(full) as a, ActivationStore(last) as b:
        assert b._f["blocks.1.hook_resid_post"].dtype == np.float16
        seq, pos = a.meta("seq"), a.meta("pos")
        ends = [np.nonzero(seq == s)[0][-1] for s in np.unique(seq)]
        torch.testing.assert_close(b.get("blocks.1.hook_resid_post"),
                                   a.get("blocks.1.hook_resid_post")[ends], atol=2e-2,
                                   rtol=2e-3)
        assert np.array_equal(b.meta("pos"), pos[ends])


def _cache_cmd(run: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli.core", "cache", "--model", str(run), "--corpus",
            str(corpus), "--hooks", RESID, "--out", str(out), "--batch-size", "4",
            "--chunk", "--no-progress", *extra]


def test_kill_9_then_resume_equals_uninterrupted(tiny_run: TrainResult, world_corpus: Path,
                                                 tmp_path: Path) -> None:
    clean, cut = tmp_path / "clean.h5", tmp_path / "cut.h5"
    subprocess.run(_cache_cmd(tiny_run.run_dir, world_corpus, clean, "--split", "train",
                              "--max-tokens", "60000"), check=True, timeout=600)
    proc = subprocess.Popen(_cache_cmd(tiny_run.run_dir, world_corpus, cut, "--split", "train",
                                       "--max-tokens", "60000"))
    partial = cut.with_name("cut.h5.partial")
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            with h5py.File(partial, "r", locking=False) as f:
                done = int(f.attrs.get("n_done", 0))
        except (OSError, KeyError):
            pass
        if done > 5000:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the cache run finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not cut.exists()
    subprocess.run(_cache_cmd(tiny_run.run_dir, world_corpus, cut, "--split", "train",
                              "--max-tokens", "60000", "--resume"), check=True, timeout=600)
    a, b = _contents(clean), _contents(cut)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(clean, "r") as fa, h5py.File(cut, "r") as fb:
        for key in ("n_rows", "n_done", "hooks", "model_checksum", "config"):
            assert fa.attrs[key] == fb.attrs[key]


def test_refusals(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.h5"
    base = ["cache", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus), "--out",
            str(out), "--max-tokens", "300", "--chunk", "--no-progress"]

    def error(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("workbench") and ": error: " in err  # a usage error names the
        assert len(err.strip().splitlines()) == 1  # subcommand: `workbench cache: error:`
        return err

    assert "matches no hook point" in error(*base, "--hooks", "blocks.*.hook_nope")
    assert "Valid names:" in error(*base, "--hooks", "blocks.*.hook_nope")
    assert "--dtype: 'float64' is not one of float32, float16" in error(
        *base, "--hooks", RESID, "--dtype", "float64")
    assert main([*base, "--hooks", RESID]) == 0
    capsys.readouterr()
    assert "already exists; pass --overwrite" in error(*base, "--hooks", RESID)
    assert main([*base, "--hooks", RESID, "--overwrite"]) == 0
    capsys.readouterr()
    # a partial file from another hook set / another model is not appended to
    partial = out.with_name("x.h5.partial")
    out.rename(partial)
    with h5py.File(partial, "r+") as f:
        f.attrs["complete"] = False
    before = partial.read_bytes()
    assert "refusing to append" in error(*base, "--hooks", "blocks.0.*", "--resume")
    assert "refusing to append" in error(*base, "--hooks", RESID, "--dtype", "float16",
                                         "--resume")
    assert partial.read_bytes() == before  # a refused resume leaves the file byte for byte
    other = tmp_path / "other-run"
    import shutil

    shutil.copytree(tiny_run.run_dir, other)
    from safetensors.torch import load_file, save_file

    from workbench.models.checkpoints import list_checkpoints, sha256_file

    ckpt = list_checkpoints(other)[-1]
    weights = load_file(ckpt / "model.safetensors")
    weights["embed.weight"] += 1.0
    save_file(weights, ckpt / "model.safetensors")
    import json

    config = json.loads((ckpt / "config.json").read_text())
    config["sha256"]["model.safetensors"] = sha256_file(ckpt / "model.safetensors")
    (ckpt / "config.json").write_text(json.dumps(config))
    err = error("cache", "--model", str(other), "--corpus", str(world_corpus), "--out", str(out),
                "--max-tokens", "300", "--chunk", "--no-progress", "--hooks", RESID, "--resume")
    assert "refusing to append" in err and "model_checksum" in err
    # foreign and corrupt files
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="is not a workbench activation file"):
        ActivationStore(foreign)
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        ActivationStore(corrupt)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ActivationStore(tmp_path / "missing.h5")


def test_long_documents_without_chunking(tiny_run: TrainResult, tmp_path: Path) -> None:
    text = tmp_path / "story.txt"
    text.write_text(" ".join(f"word{i % 50} and more" for i in range(400)))
    corpus = load_corpus(build_text_corpus([text], tmp_path / "text", vocab_size=300,
                                           progress=False))
    model = load(tiny_run.run_dir)
    with pytest.raises(ValueError, match=r"has \d+ tokens; model n_ctx is 64\. Pass --chunk"):
        cache_activations(model, corpus, CacheConfig(hooks=(RESID,), split="train"),
                          tmp_path / "t.h5", progress=False)


def test_hf_gpt2_directory_word_final(hf_gpt2_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat . the dogs that the cat sees run .\n\n" * 8)
    # a corpus encoded with the model's own tokenizer
    corpus = load_corpus(build_text_corpus([text], tmp_path / "c", tokenizer=hf_gpt2_dir,
                                           progress=False))
    model = load(hf_gpt2_dir)
    ids = corpus.tokens("train")
    assert ids[0] == model.tokenizer.bos_token_id
    path = cache_activations(model, corpus, CacheConfig(hooks=("blocks.1.hook_resid_post",),
                             split="train", positions="word-final"), tmp_path / "hf.h5",
                             progress=False)
    with ActivationStore(path) as store:
        n_words = sum(len(p.split()) for p in text.read_text().split("\n\n") if p.strip())
        pos, offset = store.meta("pos"), store.meta("offset")
        assert store.shape("blocks.1.hook_resid_post") == (len(store), 32)
        train_docs = corpus.docs("train")
        n_train_words = n_words * len(train_docs) // 8
        assert len(store) == n_train_words  # one row per word: its last sub-token
        nxt = [ids[o + 1] for o in offset if o + 1 < len(ids) and ids[o + 1] != ids[0]]
        assert all(t.startswith("Ġ") for t in model.tokenizer.convert_ids_to_tokens(nxt))
        assert pos.min() >= 1  # BOS rows are not words


def test_attention_patterns_of_variable_length_batches(tiny_run: TrainResult,
                                                       world_corpus: Path,
                                                       tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    cfg = CacheConfig(hooks=("blocks.1.attn.hook_pattern",), max_tokens=500, batch_size=3,
                      chunk=True)
    path = cache_activations(model, corpus, cfg, tmp_path / "p.h5", progress=False)
    with ActivationStore(path) as store:
        pattern = store.get("blocks.1.attn.hook_pattern")
        assert pattern.shape == (len(store), 4, 64)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(len(store), 4))
        pos = torch.from_numpy(store.meta("pos"))
        beyond = torch.arange(64)[None, :] > pos[:, None]  # causal: no weight on later keys
        assert float(pattern.permute(1, 0, 2)[:, beyond].abs().max()) == 0.0
