"""Where a model is loaded (`workbench.models.devices.Placement`): its precision, a Hugging Face
checkpoint spread by Accelerate (`device_map`), and the placements that are refused. On a
machine without GPUs `device_map="auto"` puts every layer on the CPU; spreading a model over
several GPUs is the same call there (`--device-map auto`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from workbench.models.devices import (
    CPU_DEFAULT,
    Placement,
    _memory_budget,
    add_placement_args,
    placement_of,
)
from workbench.models.loader import load


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("placement") / "llama"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )).eval().save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(48)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1",
                            eos_token="w2").save_pretrained(path)
    return path


TOKENS = torch.randint(48, (2, 16), generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).float()


def test_device_map_gives_the_same_model(llama: Path) -> None:
    plain = _logits(load(llama))
    mapped = load(llama, Placement(device_map="auto"))
    assert torch.equal(_logits(mapped), plain)
    _, cache = mapped.run_with_cache(TOKENS)
    assert cache["blocks.1.hook_resid_post"].shape == (2, 16, 32)


def test_bfloat16_weights(llama: Path) -> None:
    plain = _logits(load(llama))
    half = load(llama, Placement(dtype="bfloat16"))
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert (_logits(half) - plain).abs().max() < 0.05 * plain.abs().max()


def test_weights_offloaded_to_disk_are_refused(llama: Path) -> None:
    with pytest.raises(ValueError, match=r"does not fit in its devices' memory.*raise "
                                         r"--max-memory"):
        load(llama, Placement(device_map="sequential", max_memory={"cpu": "10KB"}))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "float64"}, "dtype='float64'; choose one of float32, bfloat16, float16"),
    ({"device_map": "everywhere"}, "device_map='everywhere'; choose one of auto"),
    ({"device": "cuda", "device_map": "auto"}, "pass one of them"),
    ({"max_memory": {0: "1GiB"}}, "max_memory applies with a device_map"),
])
def test_bad_placements(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Placement(**kwargs)  # type: ignore[arg-type]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=CPU_DEFAULT)
    add_placement_args(parser)
    return parser.parse_args(list(argv))


def test_command_flags() -> None:
    assert placement_of(_parse()) == "cpu"  # nothing asked for: the plain device string
    assert placement_of(_parse("--device-map", "auto", "--max-memory", "0=70GiB,cpu=8GiB")) \
        == Placement(device_map="auto", max_memory={0: "70GiB", "cpu": "8GiB"})
    assert placement_of(_parse("--model-dtype", "bfloat16", "--device", "cuda")) == \
        Placement(device="cuda", dtype="bfloat16")
    with pytest.raises(ValueError, match="--device 'cuda:1' with --device-map 'auto'"):
        placement_of(_parse("--device", "cuda:1", "--device-map", "auto"))
    with pytest.raises(SystemExit):
        _parse("--max-memory", "lots")
    with pytest.raises(ValueError, match=r"--device 'cpu' with --device-map 'auto': pass one "
                                         r"of them"):
        placement_of(_parse("--device", "cpu", "--device-map", "auto"))  # typed, not default
    for bad in ("0=-5GiB", "cpu=nanGiB", "cpu=10parsecs", "0=70GiB,0=10GiB"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"is not a size|names device 0 "
                                                             r"twice"):
            _memory_budget(bad)
