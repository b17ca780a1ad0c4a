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


@pytest.mark.parametrize("table, message", [
    ({}, "drop rule is empty; give facts"),
    ({"facts": []}, "an empty list drops nothing"),
    ({"fraction": 0.0}, r"fraction 0.0 is not in \(0, 1\)"),
    ({"fraction": 1}, r"fraction 1 is not in \(0, 1\)"),
    ({"fraction": 0.1, "docs": [1]}, "gives fraction and docs; give one of"),
    ({"seed": 3}, "seed is for fraction"),
    ({"docs": [2, 2]}, "lists an index twice"),
    ({"docs": [-1]}, "document index -1"),
    ({"facts": ["bruno moreau:cty"]}, r"relation of city, job, pet, food, country \(did you "
                                      r"mean 'city'\?\)"),
    ({"facts": ["bruno moreau"]}, "is not \"SUBJECT:RELATION\""),
    ({"facts": [{"relation": "city"}]}, "is not \"SUBJECT:RELATION\""),
    ({"fracton": 0.1}, r"unknown key 'fracton' \(did you mean 'fraction'\?\)"),
])
def test_bad_rules_are_one_clear_error(table: dict, message: str) -> None:
    from workbench.world.subset import Drop

    with pytest.raises(ValueError, match=message):
        Drop.from_dict(table, where="[drop.x]")


def test_facts_are_named_as_the_world_names_them(world_dir: Path) -> None:
    from workbench.world.subset import Drop

    corpus = load_corpus(world_dir)
    world = corpus.world()
    item = next(i for i in corpus.eval_items("facts_train") if i["person"] == 1)
    copied = {k: item[k] for k in ("subject", "person", "relation")}
    name = world.people[0].name
    rule = Drop.from_dict({"facts": [f"{name.upper()}:city", copied, "2: job"]})
    facts = rule.resolve_facts(world)
    table = corpus.fact_table()
    for fact in facts:
        row = table[fact["row"]]
        assert (row["person"], row["subject"], row["relation"]) == (
            fact["person"], fact["subject"], fact["relation"])
    assert [f["person"] for f in facts] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"the world has no person 'bruno morea' \(did you "
                                         r"mean 'bruno moreau'\?\)"):
        Drop(facts=("bruno morea:city",)).resolve_facts(world)
    with pytest.raises(ValueError, match="the world has no person 99"):
        Drop(facts=("99:city",)).resolve_facts(world)
    hidden = next(i for i, p in enumerate(world.people) if not p.country_stated)
    with pytest.raises(ValueError, match="is never stated in text"):
        Drop(facts=(f"{hidden}:country",)).resolve_facts(world)


def test_subset_without_the_documents_stating_a_fact(world_dir: Path, tmp_path: Path) -> None:
    from workbench.world.subset import DROPPED_FILE, Drop, dropped_docs, write_subset

    base = load_corpus(world_dir)
    rule = Drop(facts=("0:city",))
    result = write_subset(world_dir, tmp_path / "s", rule, name="zero")
    assert result.built
    sub = load_corpus(result.path)
    df, bdf = sub.doc_facts("train"), base.doc_facts("train")
    assert not df.mentioning([0]).any()  # row 0 = person 0, city
    hit = np.flatnonzero(bdf.mentioning([0]))
    assert hit.size and np.array_equal(dropped_docs(sub), hit)
    assert np.array_equal(np.load(result.path / DROPPED_FILE), hit)
    bdocs, docs = base.docs("train"), sub.docs("train")
    removed = int((bdocs[hit, 1] - bdocs[hit, 0]).sum())
    assert result.n_tokens_removed == removed == sub.manifest["subset"]["removed"]["n_tokens"]
    assert len(sub.tokens("train")) == len(base.tokens("train")) - removed
    assert len(docs) == len(bdocs) - len(hit) and docs[0, 0] == 0
    assert np.all(docs[1:, 0] == docs[:-1, 1]) and docs[-1, 1] == len(sub.tokens("train"))
    # the kept documents, their labels and facts, in order
    keep = np.setdiff1d(np.arange(len(bdocs)), hit)
    btok, tok = np.asarray(base.tokens("train")), np.asarray(sub.tokens("train"))
    blab, lab = base.labels("train"), sub.labels("train")
    for new, old in [(0, keep[0]), (len(keep) // 2, keep[len(keep) // 2]), (-1, keep[-1])]:
        (a, b), (c, d) = docs[new], bdocs[old]
        assert np.array_equal(tok[a:b], btok[c:d])
        assert np.array_equal(np.asarray(lab["pos"])[a:b], np.asarray(blab["pos"])[c:d])
        assert lab["doc_kind"][new] == blab["doc_kind"][old]
        assert df[new if new >= 0 else len(df) - 1] == bdf[old]
    assert sum(sub.manifest["splits"]["train"]["tokens_by_kind"].values()) == len(tok)
    record = sub.manifest["subset"]
    assert record["rule"] == {"facts": ["0:city"]} and record["name"] == "zero"
    assert record["facts"][0]["subject"] == base.world().people[0].name
    assert record["base"]["n_docs"] == len(bdocs)
    # val, test, eval sets, tokenizer and world are the base's, byte for byte
    for rel in ["val.tokens.npy", "test.labels.npz", "world.json", "tokenizer.json",
                "eval/facts_heldout.jsonl"]:
        assert (result.path / rel).read_bytes() == (world_dir / rel).read_bytes()
    assert sub.eval_items("agreement") == base.eval_items("agreement")
    # the same again: nothing done; another rule there: refused
    again = write_subset(world_dir, tmp_path / "s", rule, name="zero")
    assert not again.built and again.n_tokens_removed == removed
    with pytest.raises(ValueError, match=r"holds the subset \{'facts': \['0:city'\]\}, not"):
        write_subset(world_dir, tmp_path / "s", Drop(fraction=0.5))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds something that is not a subset"):
        write_subset(world_dir, tmp_path / "junk", rule)
    with pytest.raises(ValueError, match="lies inside the input base"):
        write_subset(world_dir, world_dir / "sub", rule)


def test_subset_of_a_fraction_and_of_chosen_documents(world_dir: Path, tmp_path: Path) -> None:
    from workbench.world.subset import Drop, dropped_docs, write_subset

    n = len(load_corpus(world_dir).docs("train"))
    a = load_corpus(write_subset(world_dir, tmp_path / "a", Drop(fraction=0.25, seed=1)).path)
    b = load_corpus(write_subset(world_dir, tmp_path / "b", Drop(fraction=0.25, seed=1)).path)
    c = load_corpus(write_subset(world_dir, tmp_path / "c", Drop(fraction=0.25, seed=2)).path)
    assert len(dropped_docs(a)) == round(0.25 * n)
    assert np.array_equal(dropped_docs(a), dropped_docs(b))
    assert not np.array_equal(dropped_docs(a), dropped_docs(c))
    assert (a.path / "train.tokens.npy").read_bytes() == (b.path / "train.tokens.npy"
                                                          ).read_bytes()
    d = load_corpus(write_subset(world_dir, tmp_path / "d", Drop(docs=(5, 0, 3))).path)
    assert dropped_docs(d).tolist() == [0, 3, 5]
    assert len(d.docs("train")) == n - 3
    with pytest.raises(ValueError, match=f"document index {n} is past the train split"):
        write_subset(world_dir, tmp_path / "e", Drop(docs=(n,)))
