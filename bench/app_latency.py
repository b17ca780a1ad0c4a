"""Dashboard latency: time to first render of each page with a cached model, and the response
to a new attention prompt, against a bare forward pass of the same prompts in the same run.

Every page runs through Streamlit's `AppTest` (the script run the server makes, without the
browser's drawing): the model is loaded once (`st.cache_resource`), then for each repeat the
data caches are cleared and a new session opens the page, so each timing is a first render
with a cached model. The attention response is a new prompt typed into the open page
(never seen before, so nothing is cached but the model); its baseline is the forward pass
the page needs, bare: `model.run_with_cache(prompt, names_filter=<attention patterns>)` on
the same prompts, in a worker thread like the page scripts. Goal: every number under 1 s.

    python bench/app_latency.py [--runs runs] [--model demo] [--repeats 5] [--prompts 5]

Without `runs/MODEL` it times a randomly initialised `default` model saved as a run in a
temporary folder (same shapes, so the same work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

GOAL_S = 1.0
APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
PAGES = ["pages/models.py", "pages/attention.py", "pages/induction.py", "pages/probes.py",
         "pages/beliefs.py", "pages/activations.py", "pages/logit_lens.py"]
PROMPTS = [
    "anna berg lives in bellport . she is a baker .",
    "the cat that the dogs chase eats a cookie .",
    "the brave bird sees the big barns behind the bridge .",
    "bruno brandt works as a builder and his pet is a bear .",
    "the bakers buy buns and berries beside the barn .",
    "clara lives in castora . the clever cook cleans the buckets .",
    "the dogs that the cat bites run again .",
    "ada berg is a cook . her favourite food is cake .",
]


def _random_run(tmp: Path, preset: str) -> tuple[Path, str]:
    """A runs folder with a randomly initialised `preset` saved as the run `random`."""
    from common import bench_model  # bench/common.py (the script's own folder)

    from workbench.models.checkpoints import save_checkpoint
    from workbench.models.config import get_preset
    from workbench.world import WorldConfig, build_corpus

    corpus_dir = build_corpus(WorldConfig(seed=0), tmp / "runs" / "world",
                              n_tokens_train=50_000, progress=False)
    model, corpus = bench_model(None, preset, corpus_dir)
    cfg = get_preset(preset).replace(d_vocab=corpus.vocab_size)
    save_checkpoint(tmp / "runs" / "random" / "checkpoints" / "step_000000", model.state_dict(),
                    cfg, corpus.tokenizer_path, meta={"step": 0})
    return tmp / "runs", "random"


def _session(model: str) -> object:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["model_name"] = model
    return at


def _check(at: object, where: str) -> None:
    errors = [e.value for e in at.exception] + [e.value for e in at.error]  # type: ignore[attr-defined]
    if errors:
        sys.exit(f"error: {where}: {errors[0]}")


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def page_seconds(model: str, page: str, repeats: int) -> list[float]:
    """First-render seconds of `page` in `repeats` new sessions (data caches cleared)."""
    import streamlit as st

    seconds = []
    for _ in range(repeats + 1):  # the first one (untimed) loads the model
        st.cache_data.clear()
        at = _session(model)
        if page == PAGES[0]:
            t = _timed(at.run)
        else:
            at.run()
            t = _timed(lambda at=at: at.switch_page(page).run())
        _check(at, page)
        seconds.append(t)
    return seconds[1:]


def prompt_seconds(model: str, prompts: list[str]) -> list[float]:
    """Seconds from typing each new prompt into the open attention page to its charts."""
    at = _session(model)
    at.run()
    at.switch_page(PAGES[1]).run()
    seconds = []
    for p in prompts:
        box = at.text_area(key="attn_text")  # type: ignore[attr-defined]
        seconds.append(_timed(lambda p=p, box=box: box.set_value(p).run()))
        _check(at, f"attention prompt {p!r}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--model", default="demo", help="a model under --runs")
    parser.add_argument("--preset", default="default", help="random model without --model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=5, help=f"at most {len(PROMPTS)}")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # no per-session log lines
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        runs, model_name = Path(args.runs), args.model
        if not (runs / model_name).is_dir():
            print(f"({runs / model_name} not found: timing a random `{args.preset}` model)")
            runs, model_name = _random_run(Path(tmp), args.preset)
        os.environ["WORKBENCH_RUNS"] = str(runs)
        from app import runs as folder
        from workbench.models.loader import load

        entry = next(m for m in folder.list_models(runs) if m.name == model_name)
        model = load(entry.checkpoint())  # the baseline's own copy
        prompts = PROMPTS[: args.prompts]
        bare = []

        def patterns_only(name: str) -> bool:
            return name.endswith("attn.hook_pattern")

        def baseline() -> None:
            with torch.no_grad():
                model.run_with_cache(PROMPTS[-1], names_filter=patterns_only)  # warm-up
                for p in prompts:
                    bare.append(_timed(lambda p=p: model.run_with_cache(
                        p, names_filter=patterns_only)))

        # in a worker thread, as Streamlit runs page scripts: on a busy machine the main
        # thread's OpenMP pool can be 100x slower than a worker's on the same forward pass
        worker = threading.Thread(target=baseline)
        worker.start()
        worker.join()
        pages = {page: statistics.median(page_seconds(model_name, page, args.repeats))
                 for page in PAGES}
        typed = statistics.median(prompt_seconds(model_name, prompts))
    c = model.cfg
    base = statistics.median(bare)
    print(f"model {runs / model_name} ({c.n_layers}L x {c.n_heads}H, d_model {c.d_model}, "
          f"n_ctx {c.n_ctx}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; medians of {args.repeats} sessions / {len(prompts)} prompts; "
          "script time in AppTest (the browser's drawing not included)")
    for page, s in pages.items():
        print(f"  first render {page:22s} {s * 1000:8.1f} ms   {GOAL_S / s:6.1f}x under the "
              f"{GOAL_S:.0f} s goal")
    print(f"  bare forward pass (patterns only)  {base * 1000:8.1f} ms")
    print(f"  new attention prompt               {typed * 1000:8.1f} ms   {typed / base:6.1f}x "
          f"the bare forward pass, {GOAL_S / typed:.1f}x under the goal")
    worst = max([*pages.values(), typed])
    print(f"slowest {worst * 1000:.0f} ms (goal < {GOAL_S * 1000:.0f} ms: "
          f"{'met' if worst < GOAL_S else 'NOT met'})")


if __name__ == "__main__":
    main()
