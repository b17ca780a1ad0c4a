"""The synthetic world corpus: determinism, label alignment, held-out templates, errors."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from workbench.world import WorldConfig, build_corpus, build_text_corpus, build_world, load_corpus
from workbench.world.labels import POS_TAGS
from workbench.world.lexicon import VERBS
from workbench.world.templates import (
    FRAMES,
    RELATION_PHRASES,
    heldout_templates,
    train_templates,
)
from workbench.world.tokenizer import build_world_tokenizer, load_hf_tokenizer, world_words

SMALL = WorldConfig(seed=0, n_people=20)
N_TOKENS = 40_000


def _digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "c"
    return build_corpus(SMALL, out, n_tokens_train=N_TOKENS, n_eval_items=200, progress=False)


def _decoded(corpus_dir: Path, split: str) -> list[str]:
    corpus = load_corpus(corpus_dir)
    vocab = json.loads(corpus.tokenizer_path.read_text())["model"]["vocab"]
    id_to_word = {i: w for w, i in vocab.items()}
    return [id_to_word[int(i)] for i in corpus.tokens(split)]


def test_same_seed_same_bytes_other_seed_other_bytes(corpus_dir: Path, tmp_path: Path) -> None:
    again = build_corpus(
        SMALL, tmp_path / "a", n_tokens_train=N_TOKENS, n_eval_items=200, progress=False
    )
    assert _digest(again) == _digest(corpus_dir)
    other = build_corpus(
        WorldConfig(seed=1, n_people=20),
        tmp_path / "b",
        n_tokens_train=N_TOKENS,
        n_eval_items=200,
        progress=False,
    )
    d_other = _digest(other)
    assert d_other["train.tokens.npy"] != _digest(corpus_dir)["train.tokens.npy"]
    assert d_other["tokenizer.json"] == _digest(corpus_dir)["tokenizer.json"]  # seed-free vocab


def test_manifest_and_layout(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    m = corpus.manifest
    assert m["schema"] == "workbench.corpus/1" and m["kind"] == "world"
    assert m["label_names"]["pos"] == list(POS_TAGS) and m["label_names"]["depth"] is None
    assert m["splits"]["train"]["n_tokens"] >= N_TOKENS
    assert m["splits"]["val"]["n_docs"] >= 1 and m["splits"]["test"]["n_docs"] >= 1
    assert corpus.vocab_size == len(world_words()) + 4
    tokens = corpus.tokens("train")
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    docs = corpus.docs("train")
    assert docs[0, 0] == 0 and docs[-1, 1] == len(tokens)
    assert np.all(docs[1:, 0] == docs[:-1, 1])
    assert np.all(np.asarray(tokens)[docs[:, 0]] == 2)  # every document starts with <bos>
    assert corpus.world().people[0].name == build_world(SMALL).people[0].name
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        corpus.tokens("dev")


def test_labels_are_aligned_and_right(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    names = corpus.manifest["label_names"]
    words = np.array(_decoded(corpus_dir, "train"))
    labels = corpus.labels("train")
    for key in ("pos", "depth", "number", "category", "animacy", "sentiment", "person"):
        assert labels[key].shape == words.shape and labels[key].dtype == np.int16
    assert len(labels["doc_kind"]) == len(corpus.docs("train"))
    pos = np.array(names["pos"] + ["-"])[labels["pos"]]  # -1 -> "-"
    world = corpus.world()
    people = labels["person"]
    named = people >= 0
    assert np.all(pos[named] == "PROPN")
    for i in np.flatnonzero(named)[:500]:
        p = world.people[people[i]]
        assert words[i] in (p.first, p.last)
    verb_forms = {f for v in VERBS for f in (v.sing, v.plur)}
    has_number = labels["number"] >= 0
    assert has_number.any() and np.all(pos[has_number] == "VERB")
    assert set(words[has_number]) <= verb_forms
    sing = {v.sing for v in VERBS}
    assert all(
        (w in sing) == (n == 0) for w, n in zip(words[has_number], labels["number"][has_number])
    )
    category = np.array(names["category"] + ["-"])[labels["category"]]
    assert (
        set(category[words == "dogs"]) <= {"animal", "-"} and "animal" in category[words == "dogs"]
    )
    assert set(category[(words == "velmora") & (pos != "-")]) <= {"place"}
    animacy = np.array(names["animacy"] + ["-"])[labels["animacy"]]
    assert set(animacy[(words == "cook") & (pos == "NOUN")]) == {"animate"}
    sentiment = np.array(names["sentiment"] + ["-"])[labels["sentiment"]]
    assert set(sentiment[(words == "cruel") & (pos == "ADJ")]) <= {"neg"}
    assert np.all(sentiment[pos != "ADJ"] == "-")
    depth = labels["depth"][pos != "-"]
    assert depth.max() >= 4  # relative clauses nest


def test_agreement_items_have_opposite_attractors(corpus_dir: Path) -> None:
    items = load_corpus(corpus_dir).eval_items("agreement")
    assert len(items) == 200
    assert sum(it["number"] == "sing" for it in items) == 100
    pairs = {v.plur: v.sing for v in VERBS}
    for it in items:
        assert it["attractor_number"] != it["number"]
        plur, sing = (it["correct"], it["wrong"])[:: 1 if it["number"] == "plur" else -1]
        assert pairs[plur] == sing
        words = it["prefix"].split()
        assert words[1] == it["subject"] and it["attractor"] in words[2:]
    assert {it["structure"] for it in items} == {"obj_rel", "subj_rel", "pp"}


def test_heldout_templates_never_in_text_but_their_parts_are(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    world = corpus.world()
    text = {s: " " + " ".join(_decoded(corpus_dir, s)) + " " for s in corpus.splits}
    for rel in ("city", "job", "pet", "food"):
        held, train = heldout_templates(rel), train_templates(rel)
        assert 0.2 <= len(held) / (len(held) + len(train)) <= 0.3
        for t in held:
            for p in world.people:
                for s in text.values():
                    assert f" {t.prefix(p.first, p.last)} " not in s
            assert any(u.frame == t.frame for u in train)  # the frame is trained elsewhere
            assert any(u.phrase == t.phrase for u in train)  # and so is the phrase
    train_text = text["train"]
    for frame in FRAMES:
        pattern = re.escape(frame.text.split("{S}")[0])
        assert re.search(pattern, train_text)
    for rel in ("city", "job", "pet", "food"):
        for phrase in RELATION_PHRASES[rel]:
            assert f" {phrase} " in train_text
    composed = [p for p in world.people if not p.country_stated]
    for p in composed:  # a two-hop country is never stated about its person
        assert f" {p.first} {p.last} lives in the country of " not in train_text
        assert f" {p.first} {p.last} {world.city_country[p.attributes['city']]} " not in train_text
    items = corpus.eval_items("facts_heldout")
    assert items and all(it["heldout"] and it["answer"] in it["candidates"] for it in items)
    assert {it["template"] for it in items} <= {
        t.id for r in RELATION_PHRASES for t in heldout_templates(r)
    }
    assert len({(it["person"], it["relation"]) for it in items[:80]}) == 80  # spread out


def test_tokenizer_round_trips_every_word_and_corpus_has_no_unk(corpus_dir: Path) -> None:
    tok = build_world_tokenizer()
    words = world_words()
    ids = tok.encode(" ".join(words)).ids
    assert len(ids) == len(words) and 1 not in ids
    assert tok.decode(ids) == " ".join(words)
    assert [tok.token_to_id(t) for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]
    for split in ("train", "val", "test"):
        assert 1 not in np.asarray(load_corpus(corpus_dir).tokens(split))
    hf = load_hf_tokenizer(corpus_dir)
    assert hf("the dog eats .")["input_ids"][0] == 2
    assert (
        hf.decode(hf("the dog eats .", add_special_tokens=False)["input_ids"]) == "the dog eats ."
    )


def test_words_have_one_role_and_nouns_start_with_a_consonant() -> None:
    from workbench.world import lexicon

    lists = [
        [f for n in lexicon.all_nouns() for f in (n.sing, n.plur)],
        [a.word for a in lexicon.ADJECTIVES],
        [f for v in VERBS for f in (v.sing, v.plur)],
        list(lexicon.FIRST_NAMES),
        list(lexicon.LAST_NAMES),
        list(lexicon.CITIES),
        list(lexicon.COUNTRIES),
        list(lexicon.PREPOSITIONS),
    ]
    flat = [w for ws in lists for w in ws]
    assert len(flat) == len(set(flat))
    assert not [w for w in lists[0] + lists[1] if w[0] in "aeiou"]


def test_text_corpus_bpe_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "story.txt"
    paragraphs = [
        f"Paragraph {i}: the quick brown fox jumps over the lazy dog, again." for i in range(40)
    ]
    src.write_text("\n\n".join(paragraphs) + "\n")
    out = build_text_corpus([src], tmp_path / "text", vocab_size=300, progress=False)
    corpus = load_corpus(out)
    assert corpus.kind == "text" and corpus.manifest["label_names"] == {}
    assert [corpus.manifest["splits"][s]["n_docs"] for s in ("train", "val", "test")] == [36, 2, 2]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(corpus.tokenizer_path))
    tokens = np.asarray(corpus.tokens("train"))
    decoded = {tok.decode(tokens[a + 1 : b].tolist()) for a, b in corpus.docs("train")}
    assert decoded <= set(paragraphs) and len(decoded) == 36
    with pytest.raises(ValueError, match="is a real-text corpus and has no labels"):
        corpus.labels("train")


def test_tiny_text_leaves_eval_splits_empty_and_says_so(tmp_path: Path) -> None:
    src = tmp_path / "one.txt"
    src.write_text("just one paragraph here.")
    corpus = load_corpus(build_text_corpus([src], tmp_path / "t", progress=False))
    assert corpus.manifest["splits"]["val"]["n_docs"] == 0
    assert len(corpus.tokens("val")) == 0
    assert any("val split is empty" in note for note in corpus.manifest["notes"])


def test_empty_or_missing_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n\n\t ")
    with pytest.raises(ValueError, match=r"empty.*empty\.txt.*pass non-empty text files"):
        build_text_corpus([tmp_path / "empty.txt"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        build_text_corpus([tmp_path / "nope.txt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty; pass overwrite=True / --overwrite"):
        build_corpus(SMALL, out, n_tokens_train=2000, progress=False)
    with pytest.raises(ValueError, match="has no corpus.json, so it is not a corpus"):
        build_corpus(SMALL, out, n_tokens_train=2000, overwrite=True, progress=False)
    (out / "notes.txt").unlink()
    build_corpus(SMALL, out, n_tokens_train=2000, progress=False)
    build_corpus(SMALL, out, n_tokens_train=3000, overwrite=True, progress=False)
    assert load_corpus(out).manifest["splits"]["train"]["n_tokens"] >= 3000
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary directories left


def test_load_corpus_on_a_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `workbench world build --out .*nowhere`"):
        load_corpus(tmp_path / "nowhere")


def test_damaged_files_are_refused_when_read(corpus_dir: Path, tmp_path: Path) -> None:
    """What is memory-mapped is checked as reading would: the labels' CRC-32, label values
    within their classes, token ids within the vocabulary; each a one-line error."""
    import shutil

    from workbench.world.output import load_npz_mmap, save_npz

    bad = tmp_path / "c"
    shutil.copytree(corpus_dir, bad)
    assert len(load_corpus(bad).labels("val")["pos"]) > 0  # a sound copy reads
    labels = bad / "val.labels.npz"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the stored arrays
    labels.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"val.labels.npz is damaged or truncated \(member "
                                         r".* fails its CRC-32 check\); rebuild the corpus"):
        load_corpus(bad).labels("val")
    arrays = {k: np.array(v) for k, v in load_npz_mmap(corpus_dir / "val.labels.npz").items()}
    arrays["pos"][5] = -6  # a sound file (its CRC right) holding a value no class has
    save_npz(labels, arrays)
    with pytest.raises(ValueError, match=r"label 'pos' holds -6, outside -1..12"):
        load_corpus(bad).labels("val")
    tokens = np.load(bad / "val.tokens.npy")
    tokens[7] = load_corpus(bad).vocab_size + 3
    np.save(bad / "val.tokens.npy", tokens)
    lines = (bad / "eval" / "fewshot.jsonl").read_text().splitlines()
    (bad / "eval" / "fewshot.jsonl").write_text("\n".join([lines[0], '{"task": "x"}']) + "\n")
    with pytest.raises(ValueError, match=r"fewshot.jsonl is damaged: item 2 lacks k, prefix, "
                                         r"answer, candidates, demos; rebuild"):
        load_corpus(bad).eval_items("fewshot")
    with pytest.raises(ValueError, match=r"token id \d+ at position 7 is outside the "
                                         r"vocabulary \(0..\d+\); rebuild"):
        load_corpus(bad).tokens("val")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_people": 0}, r"n_people=0; pass an integer in \[1, 1600\]"),
        ({"n_cities": 3, "n_countries": 4}, "pass n_cities >= n_countries"),
        ({"mix": {"poems": 1.0}}, r"unknown document kinds \['poems'\]"),
        ({"mix": {"bio": 0.0}}, "not all zero"),
        ({"seed": -1}, "seed=-1"),
        ({"exposure_ratio": 0.5}, r"exposure_ratio=0.5; pass a number >= 1"),
        ({"exposure_ratio": float("inf")}, r"exposure_ratio=inf"),
        ({"p_country_stated": 1.5}, r"p_country_stated=1.5; pass a probability"),
    ],
)
def test_world_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorldConfig(**kwargs)


def test_world_json_round_trip_and_fact_table() -> None:
    from workbench.world import World

    world = build_world(SMALL)
    assert World.from_json(world.to_json()) == world
    facts = world.fact_table()
    assert len(facts) == 20 * 5
    assert len({p.name for p in world.people}) == 20
    country = [f for f in facts if f["relation"] == "country"]
    by_name = {p.name: p for p in world.people}
    for f in country:
        assert world.city_country[by_name[f["subject"]].attributes["city"]] == f["object"]
    assert set(world.city_country.values()) == set(world.objects("country"))


def test_grammar_respects_selectional_restrictions() -> None:
    from workbench.world.grammar import Grammar
    from workbench.world.lexicon import all_nouns

    cls = {f: n.category for n in all_nouns() for f in (n.sing, n.plur)}
    subj_of = {f: v.subj for v in VERBS for f in (v.sing, v.plur)}
    rng = random.Random(0)
    grammar = Grammar()
    for _ in range(300):
        rows = grammar.sentence(rng)
        # Simple sentences only: DET (ADJ) N V ...
        if len(rows) > 2 and rows[1].pos == "NOUN" and rows[2].pos == "VERB":
            assert cls[rows[1].word] in subj_of[rows[2].word]
        assert rows[-1].word == "." and rows[-1].depth == 1


def test_coordinated_adjectives_carry_sentiment() -> None:
    from workbench.world.grammar import Grammar
    from workbench.world.lexicon import ADJECTIVES

    sentiment = {a.word: a.sentiment for a in ADJECTIVES}
    rng = random.Random(0)
    grammar = Grammar()
    seen = {"and": 0, "but": 0}
    for _ in range(2000):
        rows = grammar.sentence(rng)
        for a, conj, b in zip(rows, rows[1:], rows[2:]):
            if conj.pos != "CCONJ":
                continue
            assert a.pos == b.pos == "ADJ" and a.word != b.word and a.depth == conj.depth
            seen[conj.word] += 1
            if conj.word == "and":
                assert sentiment[a.word] == sentiment[b.word]
            else:
                assert {sentiment[a.word], sentiment[b.word]} == {"pos", "neg"}
    assert min(seen.values()) > 50, seen


def test_index_documents_put_the_persons_attributes_right_after_the_name() -> None:
    from workbench.world.documents import index_document

    world = build_world(SMALL)
    rng = random.Random(0)
    countries = set(world.objects("country"))
    for _ in range(50):
        doc = index_document(rng, world)
        assert [r.word for r in doc.rows[:3]] == ["<bos>", "index", ":"]
        rows = doc.rows[3:]
        i = 0
        while i < len(rows):
            pid = rows[i].person
            assert pid >= 0 and rows[i + 1].person == pid  # first + last name
            j = i + 2
            person = world.people[pid]
            attrs = {world.attribute(pid, r) for r in world.stated_relations(pid)}
            while rows[j].word != ".":
                assert rows[j].word in attrs  # the person's own facts, nothing else
                j += 1
            assert 2 <= j - i - 2 <= 5
            if not person.country_stated:  # a composed country stays unstated
                assert not countries & {r.word for r in rows[i:j]}
            i = j + 1


def test_exposure_is_zipf_like_and_documents_follow_it() -> None:
    from collections import Counter

    from workbench.world.documents import bio_document
    from workbench.world.facts import exposure_bucket

    world = build_world(SMALL)
    weights = [p.exposure for p in world.people]
    assert max(weights) / min(weights) == pytest.approx(SMALL.exposure_ratio)
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    standing = sorted(p.standing for p in world.people)
    assert standing[0] == 0.0 and standing[-1] == 1.0
    top = max(range(len(world.people)), key=lambda i: weights[i])
    low = min(range(len(world.people)), key=lambda i: weights[i])
    assert world.people[top].standing == 1.0 and exposure_bucket(1.0) == "high"
    rng = random.Random(0)
    seen = Counter(pid for _ in range(3000) for pid, _ in bio_document(rng, world).facts)
    assert seen[top] > 10 * max(1, seen[low])  # ~ratio 100 in expectation
    flat = build_world(WorldConfig(**{**SMALL.to_dict(), "exposure_ratio": 1.0}))
    assert {p.exposure for p in flat.people} == {1.0}
    assert [p.attributes for p in flat.people] == [p.attributes for p in world.people]


def test_countries_are_stated_for_a_seeded_share(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    world = corpus.world()
    stated = [p.country_stated for p in world.people]
    assert sum(stated) == round(SMALL.p_country_stated * len(stated))
    facts = corpus.fact_table()
    for f in facts:
        assert f["stated"] == (f["relation"] != "country" or stated[f["person"]])
        assert f["bucket"] in ("low", "mid", "high") and f["mentions"] >= 0
        if f["stated"]:
            assert f["mentions"] > 0  # the small corpus still states every fact
        else:
            assert f["mentions"] == 0
    twohop = corpus.eval_items("facts_twohop")
    assert twohop and not any(stated[it["person"]] for it in twohop)
    held = [it for it in corpus.eval_items("facts_heldout") if it["relation"] == "country"]
    assert held and all(stated[it["person"]] for it in held)
    assert all({"exposure", "standing", "bucket", "mentions"} <= set(it) for it in held)


def test_update_documents_follow_their_cue_with_its_reliability() -> None:
    from workbench.world.documents import update_document
    from workbench.world.updates import CUES, reliability

    world = build_world(SMALL)
    rng = random.Random(0)
    episodes = []
    for _ in range(4000):
        doc = update_document(rng, world)
        for ep in doc.updates:
            p = world.people[ep["person"]]
            cued = f"{CUES[ep['cue']]} {p.first} {p.last} "
            assert cued in doc.text and f" {ep['new']} ." in doc.text
            true = world.attribute(ep["person"], ep["relation"])
            assert ep["restated"].split()[-2] == (ep["new"] if ep["follows"] else true)
            assert doc.text.index(cued) < doc.text.rindex(ep["restated"])
            episodes.append((ep["cue"], p.standing, ep["follows"]))
    for cue in CUES:
        rows = [(s, f) for c, s, f in episodes if c == cue]
        assert len(rows) > 500, cue
        expected = np.mean([reliability(cue, s) for s, _ in rows])
        assert abs(np.mean([f for _, f in rows]) - expected) < 0.05, cue
    low = [f for c, s, f in episodes if c == "hearsay" and s < 0.3]
    high = [f for c, s, f in episodes if c == "hearsay" and s > 0.7]
    assert np.mean(low) > np.mean(high) + 0.3  # well-known people resist hearsay
    assert all(f for c, _, f in episodes if c == "news")


def test_update_documents_state_other_people_truly_drawn_uniformly() -> None:
    """Between the cue and the restatement come true facts about others, mostly of the same
    relation, about people of every standing: what the ladder's controls ask."""
    from workbench.world.documents import update_document

    world = build_world(SMALL)
    rng = random.Random(1)
    same_rel, standings = 0, []
    for _ in range(2000):
        doc = update_document(rng, world)
        if len(doc.updates) != 1:
            continue
        ep = doc.updates[0]
        others = [(pid, rel) for pid, rel in doc.facts if pid != ep["person"]]
        for pid, rel in others:
            assert f" {world.attribute(pid, rel)}" in doc.text
        same_rel += any(rel == ep["relation"] for _, rel in others)
        standings += [world.people[pid].standing for pid, _ in others]
    assert same_rel > 600  # most single-update documents show the relation held for others
    # uniform over people: the least-exposed half appears about as often as the most-exposed
    low = sum(s < 0.5 for s in standings) / len(standings)
    assert 0.4 < low < 0.6


def test_update_restatements_sometimes_follow_the_cue_at_once() -> None:
    """The pressure ladder asks right after the cue, so training must show that too (with
    always 1-3 facts between, trained models kept the old object when asked at once), and a
    repeated cue comes in several phrasings, as the ladder's `repeated` level says it."""
    from workbench.world.documents import update_document
    from workbench.world.updates import CUES, P_IMMEDIATE

    world = build_world(SMALL)
    rng = random.Random(2)
    immediate, single, varied = 0, 0, 0
    for _ in range(3000):
        doc = update_document(rng, world)
        if len(doc.updates) != 1:
            continue
        ep = doc.updates[0]
        p = world.people[ep["person"]]
        cued = f"{CUES[ep['cue']]} {p.first} {p.last} "
        said = [part.split(" .")[0] for part in doc.text.split(cued)[1:]]
        last_end = doc.text.rindex(cued) + len(cued) + len(said[-1]) + len(" .")
        between = doc.text[last_end:doc.text.rindex(ep["restated"])].strip()
        single += 1
        immediate += between == ""
        varied += len(set(said)) > 1
    assert abs(immediate / single - P_IMMEDIATE) < 0.05
    assert varied > 0.05 * single  # repeated cues in another phrasing


def test_fewshot_training_labels_are_independent_draws() -> None:
    """A label must not become less likely the more often it was shown (sampling demos
    without replacement from a small pool does that, and a model learns it)."""
    from workbench.world.fewshot import FewShotTasks

    tasks = FewShotTasks(build_world(SMALL))
    pool = [p.y for p in tasks._split("adj_sentiment", heldout=False)]
    q = pool.count(pool[0]) / len(pool)
    sentiment = set(pool)
    rng = random.Random(0)
    same, n = 0, 0
    for _ in range(6000):
        words = tasks.document(rng).text.split()
        labels = [y for _, y in (p.split(" : ") for p in " ".join(words[1:-1]).split(" ; "))]
        if set(labels) <= sentiment:
            same += sum(a == b for a, b in zip(labels, labels[1:], strict=False))
            n += len(labels) - 1
    # consecutive labels agree as often as independent draws (flipped documents too): the
    # same rate within 0.015 (measured 0.003 off; without replacement 0.037 below)
    assert n > 1000 and abs(same / n - (q**2 + (1 - q) ** 2)) < 0.015


def test_fewshot_documents_and_items() -> None:
    from workbench.world.fewshot import (
        INPUT_TYPE,
        KNOWN_TASKS,
        KS,
        NOVEL_LABELS,
        PERSON_TASKS,
        TASKS,
        FewShotTasks,
    )

    world = build_world(SMALL)
    tasks = FewShotTasks(world)
    items = tasks.eval_items(n=5)
    assert {(it["task"], it["k"]) for it in items} == {(t, k) for t in TASKS for k in KS}
    sentiment = {p.x_text: p.y for p in tasks.pairs["adj_sentiment"]}
    for it in items:
        assert it["answer"] in it["candidates"] and it["prefix"].endswith(" :")
        assert len(it["demos"]) == it["k"] and it["prefix"].count(";") == it["k"]
        if it["task"] in KNOWN_TASKS or it["task"] == "flipped":
            assert it["x"] in tasks.heldout[INPUT_TYPE[it["task"]]]
            assert it["x"] not in [d[0] for d in it["demos"]]
        if it["task"] == "flipped":
            assert it["prior"] == sentiment[it["x"]] != it["answer"]
            assert all(y != sentiment[x] for x, y in it["demos"])
        if it["task"] == "novel" and it["k"]:
            assert [it["x"], it["answer"]] in it["demos"]  # the mapping is in the context
    rng = random.Random(0)
    kinds = set()
    for _ in range(500):
        words = tasks.document(rng).text.split()
        assert words[0] == "<bos>" and words[-1] == "."
        pairs = [p.split(" : ") for p in " ".join(words[1:-1]).split(" ; ")]
        labels = {y for _, y in pairs}
        if labels <= set(NOVEL_LABELS):
            kinds.add("novel")
            mapping = {}
            for x, y in pairs:  # one mapping per document
                assert mapping.setdefault(x, y) == y
            continue
        task = next(t for t in KNOWN_TASKS if labels <= set(tasks.answers(t)))
        kinds.add(task)
        for x, _ in pairs:  # held-out inputs never appear in a training document
            assert x not in tasks.heldout[INPUT_TYPE[task]]
    assert kinds == set(KNOWN_TASKS) | {"novel"}
    # a person's four relations share their candidates: the query does not name the relation
    person = {tuple(tasks.candidates(t)) for t in PERSON_TASKS}
    assert len(person) == 1 and all(set(tasks.answers(t)) < set(*person) for t in PERSON_TASKS)
    assert set(tasks.candidates("noun_category")) == (set(tasks.answers("noun_category"))
                                                      | set(tasks.answers("noun_plural")))


def test_fewshot_people_follow_exposure_and_count_as_mentions() -> None:
    """People appear in demonstrations as often as their exposure says, and each
    demonstration is a mention of that fact (so `mentions` in world.json stays true)."""
    from collections import Counter

    from workbench.world.fewshot import PERSON_TASKS, FewShotTasks

    world = build_world(SMALL)
    tasks = FewShotTasks(world)
    rng = random.Random(1)
    seen: Counter[int] = Counter()
    for _ in range(3000):
        doc = tasks.document(rng)
        for pid, rel in doc.facts:
            assert rel in PERSON_TASKS.values()
            assert f"{world.people[pid].first} {world.people[pid].last} : " \
                f"{world.attribute(pid, rel)}" in doc.text
            seen[pid] += 1
    top = max(seen, key=lambda p: world.people[p].exposure)
    low = min(seen, key=lambda p: world.people[p].exposure)
    assert seen[top] > 3 * seen[low]
