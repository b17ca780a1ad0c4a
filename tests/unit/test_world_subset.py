"""Facts per document (`{split}.doc_facts.npz`) and subsets of a world corpus
(`workbench.world.subset`): the drop rules, their checks, and the derived corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.world import WorldConfig, build_corpus, load_corpus

TINY = WorldConfig(seed=0, n_people=12)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(TINY, tmp_path_factory.mktemp("world") / "w", n_tokens_train=20000,
                        n_eval_items=50, progress=False)


def test_doc_facts_count_the_mentions_of_the_fact_table(world_dir: Path) -> None:
    corpus = load_corpus(world_dir)
    table = corpus.fact_table()
    for split in corpus.splits:
        df = corpus.doc_facts(split)
        assert len(df) == len(corpus.docs(split))
    train = corpus.doc_facts("train")
    assert train.counts().tolist() == [f["mentions"] for f in table]
    kinds = corpus.manifest["doc_kinds"]
    doc_kind = np.asarray(corpus.labels("train")["doc_kind"])
    for d in range(len(train)):  # only documents about people state facts
        if train[d]:
            assert kinds[doc_kind[d]] in ("bio", "index", "update", "fewshot")
            assert all(table[i]["stated"] for i in train.indices(d))
    assert any(train[d] for d in range(len(train)))


def test_a_world_built_before_doc_facts_says_to_rebuild(world_dir: Path, tmp_path: Path
                                                        ) -> None:
    import shutil
    old = tmp_path / "old"
    shutil.copytree(world_dir, old)
    manifest = json.loads((old / "corpus.json").read_text())
    for files in manifest["files"]["splits"].values():
        del files["doc_facts"]
    (old / "corpus.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"records no facts per document .* `workbench world "
                                         r"build --overwrite`"):
        load_corpus(old).doc_facts("train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_corpus(world_dir).doc_facts("dev")
