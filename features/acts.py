"""The activation file a dictionary trains on: read when it exists and fits the model, made
(resumably) when it does not; and the record the dictionary keeps of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.cache.store import ActivationStore, CacheConfig, cache_activations
from workbench.hooks import weights_checksum

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus


def open_activations(model: Model, corpus: Corpus, hooks: list[str], acts: str | Path, *,
                     split: str, tokens: int, model_ref: str, progress: bool = True
                     ) -> ActivationStore:
    """The store at `acts` holding every hook of `hooks` for `model`: made first over
    `min(tokens, split size)` tokens of `split` (float16, every position, resumably) when it
    does not exist.

    Raises:
        ValueError: the file was made by another model (weight checksum) or lacks a hook.
    """
    acts = Path(acts)
    if acts.exists():
        store = ActivationStore(acts)
        if store.attrs.get("model_checksum") != weights_checksum(model):
            store.close()
            raise ValueError(f"activation file {acts} was made by another model (weight "
                             "checksum); pass --acts NEW.h5 to make one for this model")
    else:
        acts.parent.mkdir(parents=True, exist_ok=True)
        cfg = CacheConfig(hooks=tuple(hooks), split=split, positions="all", dtype="float16",
                          chunk=True, max_tokens=min(tokens, len(corpus.tokens(split))),
                          chunk_rows=4096)
        resume = acts.with_name(acts.name + ".partial").exists()
        cache_activations(model, corpus, cfg, acts, model_ref=model_ref, resume=resume,
                          progress=progress)
        store = ActivationStore(acts)
    missing = [h for h in hooks if h not in store.hooks]
    if missing:
        have = store.hooks
        store.close()
        raise ValueError(f"activation file {acts} has no hook {missing[0]!r} (it holds "
                         f"{', '.join(have)}); cache it with `workbench cache --hooks "
                         f"{' '.join(hooks)} --positions all --out NEW.h5` and pass --acts "
                         "NEW.h5")
    return store


def dictionary_meta(model: Model, model_ref: str, corpus: Corpus, store: ActivationStore,
                    hook: str, target: str | None = None) -> dict[str, Any]:
    """What a dictionary records of its model and activations (`workbench.json`)."""
    return {"model": model_ref, "model_checksum": weights_checksum(model), "hook": hook,
            "target": target, "corpus": str(corpus.path), "split": store.attrs.get("split"),
            "acts": str(store.path), "n_rows": len(store), "n_ctx": model.cfg.n_ctx}
