"""Checks of inputs made before any work: the corpus fits the model (tokenizer, vocabulary,
split), and the settings fit in memory (a refusal names the bytes it would need).

>>> fmt_bytes(3 * 2**30)
'3.0 GiB'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.config import ModelConfig
    from workbench.world.loader import Corpus

FLOAT = 4  # bytes per activation (float32)


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (no hub name can load)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_error(ref: str, reason: str) -> OSError:
    """The refusal of a hub name that cannot load here, with the fix."""
    return OSError(
        f"cannot load {ref!r} from the Hugging Face hub ({reason}). Pass a local directory "
        "instead: a run of ours (runs/NAME) or a Hugging Face model saved with "
        "save_pretrained (config.json + weights + tokenizer)"
    )


def check_memory(need: int, flag: str, value: object, share: float = 0.9) -> None:
    """Refuse settings whose estimated memory `need` exceeds what is available."""
    have = available_memory()
    if need > share * have:
        raise ValueError(f"{flag} {value} needs about {fmt_bytes(need)} of memory, more than "
                         f"the {fmt_bytes(have)} available; pass a smaller {flag}")


LOAD_FACTOR = 2  # a loaded model's weights, and a transient copy while they are read
IGNORE_MEMORY_ENV = "WORKBENCH_IGNORE_MEMORY"


def rough_param_count(config: dict[str, object]) -> int | None:
    """A lower bound of a decoder's parameters from the usual `config.json` fields (layers x
    12 x width^2 + vocabulary x width), read in microseconds; None when the fields are not
    there. It refuses absurd configs at once: building a model of a million layers even on
    the meta device takes minutes.

    >>> rough_param_count({"n_layer": 2, "n_embd": 8, "vocab_size": 10})
    1616
    """
    def first(*keys: str) -> int | None:
        for k in keys:
            v = config.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        return None
    layers = first("num_hidden_layers", "n_layer", "n_layers", "num_layers")
    width = first("hidden_size", "n_embd", "d_model")
    if layers is None or width is None:
        return None
    return 12 * layers * width * width + (first("vocab_size") or 0) * width


def too_big_for_memory(path: str | os.PathLike[str]) -> int | None:
    """The rough parameter count (`rough_param_count`) of the Hugging Face config in `path`
    when a model of that size could not load in the memory available, else None (it fits,
    or the config does not say)."""
    import json

    try:
        rough = rough_param_count(json.loads((Path(path) / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None  # a damaged config is the loader's to name
    return rough if rough is not None and rough * FLOAT * LOAD_FACTOR > available_memory() \
        else None


def hf_param_count(path: str | os.PathLike[str]) -> int | None:
    """Parameters of the Hugging Face model in `path`, from its `config.json` alone: the model
    is built on the meta device (no memory, no weights read). None when transformers cannot
    build it from the config (the check is then skipped). A config whose rough count
    (`rough_param_count`) would not fit in memory is answered with that count at once."""
    rough = too_big_for_memory(path)
    if rough is not None:
        return rough
    try:
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            try:
                model = AutoModelForCausalLM.from_config(cfg)
            except ValueError:  # not a causal LM (an encoder): its base model
                model = AutoModel.from_config(cfg)
        return sum(p.numel() for p in model.parameters())  # tied weights counted once
    except Exception:  # noqa: BLE001 - an estimate only: never stop a load that may work
        return None


def check_model_memory(ref: str, n_params: int, dtype_bytes: int = FLOAT) -> None:
    """Refuse to load a model of `n_params` parameters whose estimated memory (parameters x
    `dtype_bytes` x `LOAD_FACTOR`) exceeds the memory available, unless the environment
    variable `WORKBENCH_IGNORE_MEMORY` is set to 1."""
    if os.environ.get(IGNORE_MEMORY_ENV, "0").lower() in ("1", "true", "yes", "on"):
        return
    need = n_params * dtype_bytes * LOAD_FACTOR
    have = available_memory()
    if need > have:
        raise ValueError(
            f"model {ref} has {n_params / 1e6:,.0f}M parameters and needs about "
            f"{fmt_bytes(need)} of memory to load ({dtype_bytes} bytes each, x{LOAD_FACTOR} "
            f"while loading), more than the {fmt_bytes(have)} available; use a smaller model, "
            f"load it on a GPU (--device cuda, for the commands that run it), or set "
            f"{IGNORE_MEMORY_ENV}=1 to try anyway")


def check_disk(need: int, folder: str | os.PathLike[str], fix: str) -> None:
    """Refuse to write about `need` bytes into `folder` when its disk has less free."""
    import shutil

    free = shutil.disk_usage(folder).free
    if need > free:
        raise ValueError(f"the output needs about {fmt_bytes(need)} on disk, more than the "
                         f"{fmt_bytes(free)} free in {folder}; {fix}")


def forward_bytes(n_layers: int, d_model: int, d_mlp: int, n_heads: int, d_vocab: int,
                  batch: int, n_ctx: int) -> int:
    """Rough peak memory of one forward pass that keeps every activation (float32)."""
    per_token = n_layers * (12 * d_model + 2 * d_mlp + 2 * n_heads * n_ctx) + 2 * d_vocab
    return batch * n_ctx * per_token * FLOAT


def train_bytes(cfg: ModelConfig, batch_size: int, world_size: int = 1) -> int:
    """Peak memory of a training step (activations and their gradients, weights, AdamW)."""
    per_rank = -(-batch_size // world_size)
    acts = 2 * forward_bytes(cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.d_vocab,
                             per_rank, cfg.n_ctx)
    params = cfg.n_layers * (4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.d_mlp) \
        + 2 * cfg.d_vocab * cfg.d_model
    return acts + 4 * params * FLOAT


def check_vocab(model: Model | int, corpus: Corpus) -> None:
    """The corpus' token ids fit the model's embedding (or fail with the fix); `model` may be
    the embedding's size alone (read from a config before the model loads)."""
    d_vocab = model if isinstance(model, int) else model.cfg.d_vocab
    if corpus.vocab_size > d_vocab:
        raise ValueError(f"corpus at {corpus.path} has a vocabulary of {corpus.vocab_size} "
                         f"tokens, more than the model's {d_vocab}: it was encoded "
                         "for another model; pass the corpus the model was trained on, or "
                         "re-encode it with `workbench world retokenize --tokenizer MODEL_DIR`")


def check_split(corpus: Corpus, split: str) -> None:
    """`split` is one of the corpus' splits (or fail naming them)."""
    if split not in corpus.splits:
        raise ValueError(f"--split {split!r}: corpus at {corpus.path} has the splits "
                         f"{', '.join(corpus.splits)}; pass one of them")


def check_tokenizer(model: Model, corpus: Corpus) -> None:
    """The corpus is encoded with the model's tokenizer (or fail with the fix)."""
    from workbench.world.tokenizer_files import read_tokenizer_file

    check_vocab(model, corpus)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(f"model {model.cfg.model_name} has no tokenizer, so the corpus at "
                         f"{corpus.path} cannot be matched to it; save its tokenizer files "
                         "beside the weights (`tokenizer.save_pretrained(DIR)`)")
    theirs = read_tokenizer_file(corpus.tokenizer_path).get_vocab()
    if tok.get_vocab() != theirs:
        fix = (f"workbench world retokenize --corpus {corpus.path} --tokenizer MODEL_DIR --out "
               f"{corpus.path}-MODEL --splits val,test" if corpus.kind == "world" else
               "workbench world build --text FILE... --tokenizer MODEL_DIR --out DIR")
        raise ValueError(
            f"corpus at {corpus.path} is encoded with another tokenizer than the model's; "
            f"re-encode it for this model with `{fix}`")
