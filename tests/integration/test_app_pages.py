"""Every dashboard page through Streamlit's `AppTest`, on the tiny run and on the tiny Hugging
Face GPT-2: it loads without an exception, and one interaction changes what it shows.

AppTest runs the router (`app/streamlit_app.py`) on the first run, which stores the sidebar's
model in the session. Later runs execute the page file alone: AppTest re-detects Streamlit's
legacy `pages/` folder mode on every run (the server has it off, see `app.serve`), so the model
is chosen through `session_state` before the first run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import compute
from app import runs as folder

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
PAGES = ["pages/models.py", "pages/attention.py", "pages/induction.py", "pages/circuits.py",
         "pages/probes.py",
         "pages/beliefs.py", "pages/attribution.py", "pages/icl.py", "pages/activations.py",
         "pages/logit_lens.py", "pages/scaling.py", "pages/features.py"]


def open_page(runs: Path, monkeypatch: pytest.MonkeyPatch, page: str, model: str = "tiny",
              **state: object) -> AppTest:
    monkeypatch.setenv(folder.RUNS_ENV, str(runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_name"] = model
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert_ok(at)
    return at


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_router_lists_pages_that_exist(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, PAGES[0])
    assert at.sidebar.selectbox(key="model_name").options == ["tiny", "tiny-gpt2"]
    assert at.title[0].value == "Models"


def test_models_page_log_axis(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/models.py", **{"step::tiny": 0})
    assert "steps         0" in at.code[0].value  # the card of the picked checkpoint
    assert figures(at)[0]["layout"]["xaxis"].get("type") != "log"
    at.toggle(key="models_log").set_value(True).run()
    assert_ok(at)
    assert figures(at)[0]["layout"]["xaxis"]["type"] == "log"


def test_attention_page_text_window_and_repeat(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/attention.py")
    grid, head = figures(at)
    assert len(grid["data"]) == 1 and len(grid["layout"]["annotations"]) == 2 * 4  # 2L x 4H
    long_text = " ".join(["anna berg lives in bellport ."] * 20)  # 120 words > n_ctx 64
    at.text_area(key="attn_text").set_value(long_text).run()
    assert_ok(at)
    assert "longer than the model's n_ctx=64" in at.caption[0].value
    at.toggle(key="attn_repeat").set_value(True).run()
    assert_ok(at)
    grid, stripes, head = figures(at)
    assert any(t.get("name") == "induction stripe" for t in head["data"])
    assert "(the text's" in at.caption[0].value


def test_attention_page_corpus_document(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/attention.py")
    at.radio(key="attn_source").set_value("corpus document").run()
    assert_ok(at)
    assert at.selectbox(key="attn_corpus").value == "world"  # the run's corpus, copied
    at.number_input(key="attn_doc").set_value(3).run()
    assert_ok(at)
    head = figures(at)[1]
    assert len(head["data"][0]["x"]) > 3 and head["data"][0]["x"][0] == "0:<bos>"
    # repeated mode: the head the user enlarged stays; the window holds both copies
    at.selectbox(key="attn_layer").set_value(0).run()
    at.selectbox(key="attn_head").set_value(1).run()
    at.toggle(key="attn_repeat").set_value(True).run()
    assert_ok(at)
    assert (at.selectbox(key="attn_layer").value, at.selectbox(key="attn_head").value) == (0, 1)
    n = int(at.caption[0].value.split()[0])  # "N tokens (the text's P tokens twice)"
    period = int(at.caption[0].value.split("the text's ")[1].split()[0])
    head = figures(at)[-1]
    assert len(head["data"][0]["x"]) == n  # the whole repeated text, the second copy too
    stripe = next(t for t in head["data"] if t.get("name") == "induction stripe")
    assert len(stripe["y"]) == period and stripe["y"][-1].startswith(f"{n - 1}:")
    assert at.button(key="attn_best").label.startswith("enlarge L")
    at.button(key="attn_best").click().run()  # the best head only when asked for
    best = at.button(key="attn_best").label.split()[1].rstrip(",")
    assert f"L{at.selectbox(key='attn_layer').value}H{at.selectbox(key='attn_head').value}" \
        == best


def test_induction_page_composition_mode(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/induction.py")
    assert len(figures(at)) == 3  # heads, composition, phase change
    assert at.code[0].proto.wrap_lines  # the findings wrap, not cut off
    at.radio(key="ind_mode").set_value("V").run()
    assert_ok(at)
    assert figures(at)[1]["layout"]["title"]["text"] == "V-composition scores"


def test_probes_page_task(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/probes.py")
    assert at.selectbox(key="probe_task").options == ["animacy"]
    at.selectbox(key="probe_task").set_value("animacy").run()
    assert_ok(at)
    assert figures(at)[1]["layout"]["title"]["text"].startswith("animacy (semantics")
    command = at.code[-1].value  # the new-sweep command, at the command's defaults
    assert command.startswith("workbench probe --model") and command.endswith("--overwrite")


def test_activations_page_pca_label(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/activations.py")
    assert at.selectbox(key="acts_file").value == "tiny/acts_val.h5"
    attrs = dict(zip(at.table[0].value["attribute"], at.table[0].value["value"]))
    assert attrs["model"] == "(not recorded)"  # the fixture's file: a library call without it
    rows = at.dataframe[1].value  # after the hooks
    assert list(rows["token"])[:2] == ["<bos>", rows["token"][1]] and rows["token"][1].isalpha()
    assert "token id" in rows and rows["position"][1] == 1  # the position, not the pos label
    traces = figures(at)[0]["data"]
    names = {t["name"] for t in traces}
    assert {"NOUN", "VERB"} <= names  # coloured by part of speech, decoded
    colours = [t["marker"]["color"] for t in traces]
    assert len(set(colours)) == len(colours)  # one colour per class
    at.selectbox(key="acts_label").set_value("(none)").run()
    assert_ok(at)
    assert [t["name"] for t in figures(at)[0]["data"]] == ["all"]


def test_logit_lens_page_prompt(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/logit_lens.py")
    at.text_input(key="lens_text").set_value("the cat that the dogs chase").run()
    assert_ok(at)
    fig = figures(at)[0]
    assert fig["data"][0]["y"] == ["embed", "blocks.0.hook_resid_post",
                                   "blocks.1.hook_resid_post"]
    assert len(fig["data"][0]["x"]) == 7  # <bos> + six words


def test_beliefs_page_fact_and_edit(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/beliefs.py")
    assert at.title[0].value == "Beliefs" and at.selectbox(key="belief_relation").value == "city"
    ladder, trace = figures(at)
    assert [t["x"] for t in ladder["data"]][0] == ["none", "rumor", "hearsay", "news",
                                                   "repeated", "fewshot"]
    assert trace["layout"]["title"]["text"].startswith("Causal trace")
    # p(object) is a mean over the prompts; the trace's clean p is the edit prompt's, and the
    # page says so with that prompt's own number
    n_prompts = len(at.table[0].value)  # "each prompt"
    assert f"p(object), mean of {n_prompts} prompts" in [m.label for m in at.metric]
    clean = trace["layout"]["title"]["text"].split("(clean ")[1][:5]
    alone = next(c.value for c in at.caption if "on the edit prompt" in c.value)
    assert f"alone: p(object) {clean} (the causal trace's clean run)" in alone
    assert at.table[0].value["p(object)"].iloc[0] == pytest.approx(float(clean), abs=1e-3)
    assert any("workbench beliefs" in c.value for c in at.code)  # no report yet: its command
    states = [m.value for m in at.metric]
    at.radio(key="belief_method").set_value("ft").run()
    at.button(key="belief_edit").click().run(timeout=120)
    assert_ok(at)
    rows = at.dataframe[-1].value
    assert list(rows["kind"])[:1] == ["edit prompt"] and "neighbour" in set(rows["kind"])
    new, old = at.selectbox(key="belief_new").value, at.subheader[0].value.split(" · ")[-1]
    for kind, before, after, result in zip(rows["kind"], rows["before"], rows["after"],
                                           rows["result"], strict=True):  # each prompt marked
        if kind in ("neighbour", "other fact"):
            assert result.startswith("✓ unchanged" if after == before else "✗ changed")
        else:
            assert result == ("✓ the new object" if after == new else "✗ still the old object"
                              if after == old else "≠ a third object")
    assert "applied to a copy" in edit_caption(at) and f"state “{new}”" in edit_caption(at)
    assert "other fact" in set(rows["kind"]) and "other facts are kept" in edit_caption(at)
    at.radio(key="belief_method").set_value("memit").run()  # the last layer is not editable
    assert at.number_input(key="belief_top").value == model_layers(app_runs) - 2
    at.button(key="belief_edit").click().run(timeout=180)
    assert_ok(at)
    assert "memit edit at layer" in edit_caption(at)
    at.radio(key="belief_method").set_value("steer").run()  # hooks on a copy, no weights
    at.number_input(key="belief_alpha").set_value(4.0).run()
    at.button(key="belief_edit").click().run(timeout=120)
    assert_ok(at)
    assert "steer edit at layer 0" in edit_caption(at) and "|Δh|" in edit_caption(at)
    at.radio(key="belief_method").set_value("sae").run()  # the run's dictionary, clamped
    assert at.selectbox(key="belief_sae").value == "resid"
    at.button(key="belief_edit").click().run(timeout=120)
    assert_ok(at)
    assert "sae edit with resid" in edit_caption(at) and "|clamped codes|" in edit_caption(at)
    st.cache_data.clear()  # ask the (cached, shared) model again: the edit did not touch it
    at.run()
    assert [m.value for m in at.metric] == states


def model_layers(app_runs: Path) -> int:
    return json.loads((app_runs / "tiny" / "run.json").read_text())["model"]["n_layers"]


def edit_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if "applied to a copy" in c.value)


def test_icl_page_report_and_one_prompt(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/icl.py")
    assert at.title[0].value == "In-context learning"
    assert "novel mappings: accuracy" in at.code[0].value
    assert all(c.proto.wrap_lines for c in at.code)  # long lines wrap, not cut off
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert titles[:2] == ["Few-shot accuracy (chance dotted)",
                          "Log-probability of the right answer"]
    assert "probability of each candidate" in titles
    at.selectbox(key="icl_task").set_value("novel").run()
    at.select_slider(key="icl_k").set_value(2).run()
    assert_ok(at)
    prompt = at.code[-1].value
    assert prompt.count(";") == 2 and prompt.endswith(": ▁")  # two demonstrations, the query
    probs = next(f for f in figures(at) if f["layout"]["title"]["text"].startswith("prob"))
    assert probs["data"][0]["x"] == ["one", "two", "three", "four"]
    assert 0 < sum(probs["data"][0]["y"]) <= 1 + 1e-6  # the candidates share the probability


def test_attribution_page_fact_and_method(app_runs, monkeypatch):
    report = json.loads((app_runs / "tiny/analyses/attribute.json").read_text())
    facts = [q["fact"] for q in report["queries"]]
    at = open_page(app_runs, monkeypatch, "pages/attribution.py")
    assert at.title[0].value == "Why does it believe this?"
    assert at.selectbox(key="attr_fact").options == [
        f"{f} → {q['answer']}" for f, q in zip(facts, report["queries"], strict=True)]
    assert at.selectbox(key="attr_method").options == ["grad-cos", "tracin", "bm25", "random"]
    assert at.subheader[0].value == facts[0]
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert len(titles) == 3 and titles[0].startswith("tiny: retrieving the documents")
    assert titles[2].startswith("When each fact was taught")
    top = at.table[0].value  # grad-cos's ranking of the first fact, each document marked
    top_grad = report["methods"]["grad-cos"]["top"][facts[0]]
    assert list(top["document"]) == [d["doc"] for d in top_grad]
    assert list(top["states the fact"]) == [compute.STATES if d["states"] else compute.NOT_STATES
                                            for d in top_grad]
    retrieval = at.dataframe[0].value
    assert list(retrieval["method"]) == ["grad-cos", "tracin", "bm25", "random",
                                         "random's expectation"]
    fact = report["methods"]["bm25"]["facts"][facts[0]]
    assert retrieval["AUPRC"][2] == pytest.approx(fact["ap"], abs=1e-3)
    assert retrieval["AUPRC"][4] == pytest.approx(fact["base_rate"], abs=1e-3)
    shares = at.dataframe[1].value  # TracIn: the two checkpoints' stretches
    assert list(shares["from step"]) == report["tracin"]["steps"]
    assert sum(shares["share"]) == pytest.approx(1.0, abs=1e-2)
    assert not any(s.value == "Retraining check" for s in at.subheader)  # no `verify` key
    at.selectbox(key="attr_fact").set_value(facts[1]).run()
    assert_ok(at)
    assert at.subheader[0].value == facts[1]
    assert list(at.table[0].value["document"]) == [
        d["doc"] for d in report["methods"]["grad-cos"]["top"][facts[1]]]
    at.selectbox(key="attr_method").set_value("bm25").run()
    assert_ok(at)
    assert list(at.table[0].value["document"]) == [
        d["doc"] for d in report["methods"]["bm25"]["top"][facts[1]]]
    assert any(m.value.startswith("**bm25's top") for m in at.markdown)


def test_attribution_page_without_report_and_with_a_retraining_check(app_runs, tmp_path,
                                                                      monkeypatch):
    """A run without a report: the form starts at the command's defaults and its command
    follows it. A report with a `verify` key: the retraining check shown as a table."""
    runs = tmp_path / "runs"
    shutil.copytree(app_runs / "world", runs / "world")
    shutil.copytree(app_runs / "tiny", runs / "tiny",
                    ignore=shutil.ignore_patterns("acts_val.h5", "analyses"))
    at = open_page(runs, monkeypatch, "pages/attribution.py")
    assert at.subheader[0].value == "No attribution report for tiny yet"
    cli = folder.analysis_defaults("attribute")
    assert at.multiselect(key="attr_new_methods").value == cli["method"].split(",")
    assert at.number_input(key="attr_new_facts").value == int(cli["facts"])
    assert at.number_input(key="attr_new_candidates").value == int(cli["candidates"])
    command = at.code[0].value
    assert command.startswith("workbench attribute --model") and "--method" not in command
    at.multiselect(key="attr_new_methods").set_value(["grad-cos", "tracin"]).run()
    at.number_input(key="attr_new_facts").set_value(2).run()
    assert_ok(at)
    assert "--method grad-cos,tracin --facts 2" in at.code[0].value
    report = json.loads((app_runs / "tiny/analyses/attribute.json").read_text())
    report["verify"] = {
        "result": "runs/verify/verify.json", "k": 3,
        "conditions": {"bm25": {"removed_docs": 5, "removed_stating": 5},
                       "random": {"removed_docs": 5, "removed_stating": 0}},
        "seeds": {"0": {"none": {"margin": 3.0, "accuracy": 1.0, "drop": None},
                        "bm25": {"margin": 2.0, "accuracy": 1.0, "drop": 1.0},
                        "random": {"margin": 2.8, "accuracy": 0.8, "drop": 0.2}}},
        "verdicts": {"0": {"drop": {"bm25": 1.0, "random": 0.2}}}}
    (runs / "tiny/analyses").mkdir()
    (runs / "tiny/analyses/attribute.json").write_text(json.dumps(report))
    at.run()
    assert_ok(at)
    assert any(s.value == "Retraining check" for s in at.subheader)
    check = at.dataframe[-1].value
    assert list(check["removed"]) == ["none", "bm25", "random"]
    assert list(check["accuracy"]) == [1.0, 1.0, 0.8] and list(check["documents"]) == [0, 5, 5]


def test_beliefs_page_links_the_attribution_report(app_runs, tmp_path, monkeypatch):
    """A fact the attribute report asked about: its top 3 documents by the report's first
    method; without a report, one line naming `workbench attribute`."""
    report = json.loads((app_runs / "tiny/analyses/attribute.json").read_text())
    subject, relation = report["queries"][0]["fact"].rsplit(":", 1)
    at = open_page(app_runs, monkeypatch, "pages/beliefs.py", belief_relation=relation,
                   belief_subject=subject)
    label = f"training documents that taught {subject}:{relation}: grad-cos's top 3"
    assert label in [e.label for e in at.expander]
    top = at.table[1].value  # after "each prompt"
    assert list(top["document"]) == [
        d["doc"] for d in report["methods"]["grad-cos"]["top"][f"{subject}:{relation}"][:3]]
    assert not any("`workbench attribute` links" in c.value for c in at.caption)
    runs = tmp_path / "runs"
    shutil.copytree(app_runs / "world", runs / "world")
    shutil.copytree(app_runs / "tiny", runs / "tiny",
                    ignore=shutil.ignore_patterns("acts_val.h5", "analyses"))
    at = open_page(runs, monkeypatch, "pages/beliefs.py", belief_relation=relation,
                   belief_subject=subject)
    assert not any(e.label.startswith("training documents") for e in at.expander)
    assert any(c.value.startswith("`workbench attribute` links facts") for c in at.caption)


@pytest.mark.parametrize("page", PAGES)
def test_pages_on_hugging_face_model(app_runs, monkeypatch, page):
    at = open_page(app_runs, monkeypatch, page, model="tiny-gpt2")
    if page == "pages/models.py":
        assert "(Hugging Face, GPT2LMHeadModel)" in at.code[0].value
        assert "No training curves" in at.info[0].value
    elif page == "pages/activations.py":  # the tiny run's file is not this model's
        assert at.subheader[0].value == "No activation file for tiny-gpt2 yet"
        assert "tiny/acts_val.h5" in at.caption[0].value  # the other model's, named
        assert any(c.value.startswith("workbench cache --model") and "tiny-gpt2" in c.value
                   for c in at.code)
        assert at.button(key="run_cache")
    elif page in ("pages/induction.py", "pages/circuits.py", "pages/probes.py",
                  "pages/icl.py"):  # no analyses
        kind = page.removeprefix("pages/").removesuffix("s.py").removesuffix(".py")
        assert any(c.value.startswith(f"workbench {kind}") and "tiny-gpt2" in c.value
                   and c.proto.wrap_lines for c in at.code)  # the command wraps
        assert at.button, "no button runs the missing analysis"
    elif page == "pages/features.py":  # no dictionary: the command that trains one
        assert at.subheader[0].value == "No dictionary for tiny-gpt2 yet"
        assert any(c.value.startswith("workbench sae train --model") and "tiny-gpt2" in c.value
                   for c in at.code)
        assert at.button(key="run_sae_train")
    elif page == "pages/attribution.py":  # no report: the command at its defaults, no TracIn
        assert at.subheader[0].value == "No attribution report for tiny-gpt2 yet"
        assert any(c.value.startswith("workbench attribute --model") and "tiny-gpt2" in c.value
                   and "--method" not in c.value for c in at.code)
        assert "tracin" not in at.multiselect(key="attr_new_methods").options
        assert at.button(key="run_attribute")
    else:
        assert figures(at)


def test_circuits_page_threshold(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/circuits.py")
    assert at.selectbox(key="circ_task").options == ["induction", "agreement"]
    graph = figures(at)[0]
    edges = [t for t in graph["data"] if t.get("mode") == "lines"]
    assert edges and "circuit by eap-ig" in graph["layout"]["title"]["text"]
    assert {r["method"] for r in at.dataframe[0].value.to_dict("records")} >= {"eap-ig", "exact"}
    at.slider(key="circ_threshold").set_value(0.0).run()
    assert_ok(at)
    more = [t for t in figures(at)[0]["data"] if t.get("mode") == "lines"]
    assert len(more) > len(edges)  # every edge drawn at threshold 0
    at.selectbox(key="circ_task").set_value("agreement").run()
    assert_ok(at)
    assert "agreement circuit" in figures(at)[0]["layout"]["title"]["text"]


def test_features_page_latent_search(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/features.py")
    assert "topk, 256 latents at `blocks.1.hook_resid_post`" in at.caption[0].value
    assert len(figures(at)) >= 2  # recovery, exposure (and the latent's histogram)
    assert "CE recovered" in at.code[0].value
    at.text_input(key="sae_query").input("pos:").run()
    assert_ok(at)
    options = at.selectbox(key="sae_latent").options
    assert options
    assert any("best latent of: pos:" in m.value for m in at.markdown)
    at.text_input(key="sae_query").input("no such label").run()
    assert at.info[0].value == "No latent matches."


def test_button_runs_missing_analysis(hf_gpt2_dir, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(hf_gpt2_dir, runs / "gpt2")
    at = open_page(runs, monkeypatch, "pages/induction.py", model="gpt2")
    assert not figures(at)
    at.button(key="run_induction").click().run(timeout=300)
    assert_ok(at)
    assert (runs / "gpt2/analyses/induction.json").is_file()
    assert len(figures(at)) == 2  # heads and composition (no checkpoints to follow)


def test_activations_page_caches_the_selected_model(app_runs, tmp_path, monkeypatch):
    """A model without a file: the page says so and its button runs `workbench cache`; the
    file it writes names the model it was made from."""
    runs = tmp_path / "runs"
    shutil.copytree(app_runs / "world", runs / "world")
    shutil.copytree(app_runs / "tiny", runs / "tiny",
                    ignore=shutil.ignore_patterns("acts_val.h5", "analyses"))
    at = open_page(runs, monkeypatch, "pages/activations.py")
    assert at.subheader[0].value == "No activation file for tiny yet"
    at.button(key="run_cache").click().run(timeout=300)
    assert_ok(at)
    assert (runs / "tiny/acts_val.h5").is_file()
    at.run()
    assert_ok(at)
    assert at.selectbox(key="acts_file").value == "tiny/acts_val.h5"
    attrs = dict(zip(at.table[0].value["attribute"], at.table[0].value["value"]))
    assert Path(attrs["model"]).resolve() == (runs / "tiny").resolve()


def test_scaling_page_ability_and_member(app_runs, monkeypatch):
    at = open_page(app_runs, monkeypatch, "pages/scaling.py")
    assert at.selectbox(key="scaling_sweep").options == ["sweeps/micro"]
    curves, law, ability = figures(at)
    assert len(curves["data"]) == 3 and law["layout"]["xaxis"]["type"] == "log"
    assert "R²" in law["data"][1]["name"]  # the fitted law beside its points
    assert at.selectbox(key="scaling_ability").options == ["facts", "agreement"]
    titles = [a["text"] for a in ability["layout"]["annotations"]]
    assert titles[0].startswith("top-1 accuracy: ") and titles[1].startswith("log-probability")
    at.radio(key="scaling_scale").set_value("C").run()
    assert_ok(at)
    assert "C = 6ND" in figures(at)[2]["layout"]["xaxis"]["title"]["text"]
    at.selectbox(key="scaling_ability").set_value("agreement").run()
    assert_ok(at)
    assert figures(at)[2]["layout"]["title"]["text"] == "agreement against C"
    # the first member's run is the tiny model: open it as the sidebar's model
    at.button(key="scaling_open").click().run()
    assert_ok(at)
    assert at.session_state["model_name"] == "tiny"
    at.selectbox(key="scaling_member").set_value("L1-d50112_steps300_seed0").run()
    assert_ok(at)
    assert "is not a model under the runs folder" in at.info[0].value


def test_icl_progress_names_the_mechanism_step(tiny_run, world_corpus, capsys):
    """The dashboard's progress bar (`parse_progress` of the command's output) names the
    mechanism's steps, instead of sitting at 100 % of the few-shot items while they run."""
    from icl import measure

    measure.from_ref(tiny_run.run_dir, measure.IclConfig(ks=(0, 2), n=4, min_score=0.2),
                     corpus=world_corpus, progress=True)
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    bars = [b for b in map(folder.parse_progress, lines) if b is not None]
    descs = [d for d, _ in bars]
    assert "few-shot items" in descs and "mechanism: ablations" in descs, descs
    assert descs.index("few-shot items") < descs.index("mechanism: induction heads")
