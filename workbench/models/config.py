"""Model and training configuration, and the presets that pair them.

`ModelConfig` is the one description of a native model's shape; `TrainConfig` its
optimisation settings. A preset name (`tiny`, `attn2`, `default`, `small`) names one of each:
`PRESETS[name]` and `TRAIN_PRESETS[name]`. `ModelConfig` converts to a
TransformerLens `TransformerBridgeConfig` (the analysed, hooked model) and drives
`FastGPT` (the training path); both hold the same weights under the same names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

ACT_FNS = ("gelu", "gelu_new", "relu", "silu")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPT-style decoder (pre-LayerNorm, learned positions, causal).

    Args:
        n_layers: number of transformer blocks.
        d_model: width of the residual stream.
        n_heads: attention heads per layer.
        d_head: width of one head; `n_heads * d_head` need not equal `d_model`.
        d_mlp: hidden width of the MLP (ignored when `attn_only`).
        n_ctx: longest sequence the model accepts (learned position embeddings).
        d_vocab: vocabulary size; set from the tokenizer when building a run.
        attn_only: no MLPs (the induction-head models of Olsson et al. 2022).
        act_fn: MLP activation.
        seed: initialisation seed.
    """

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 128
    d_vocab: int = -1
    attn_only: bool = False
    act_fn: str = "gelu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name}={value!r}; it must be a positive integer")
        if self.d_vocab != -1 and self.d_vocab < 5:
            raise ValueError(
                f"ModelConfig.d_vocab={self.d_vocab}; it must be >= 5 (or -1 to take it from "
                "the tokenizer)"
            )
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"ModelConfig.act_fn={self.act_fn!r}; choose one of {ACT_FNS}")

    @property
    def d_attn(self) -> int:
        """Width of the concatenated head outputs (`n_heads * d_head`)."""
        return self.n_heads * self.d_head

    @property
    def n_params(self) -> int:
        """Number of parameters (embeddings and unembedding included)."""
        d, v, a = self.d_model, max(self.d_vocab, 0), self.d_attn
        per_block = 2 * d + 3 * (d * a + a) + a * d + d  # ln1, W_QKV, W_O
        if not self.attn_only:
            per_block += 2 * d + d * self.d_mlp + self.d_mlp + self.d_mlp * d + d
        return v * d + self.n_ctx * d + self.n_layers * per_block + 2 * d + d * v + v

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return ModelConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_bridge_config(self) -> Any:
        """The TransformerLens `TransformerBridgeConfig` of this model."""
        from transformer_lens.config import TransformerBridgeConfig

        if self.d_vocab < 1:
            raise ValueError("ModelConfig.d_vocab is unset (-1); set it from the tokenizer first")
        return TransformerBridgeConfig(
            d_model=self.d_model,
            d_head=self.d_head,
            n_layers=self.n_layers,
            n_ctx=self.n_ctx,
            n_heads=self.n_heads,
            d_mlp=self.d_mlp,
            d_vocab=self.d_vocab,
            act_fn=self.act_fn,
            attn_only=self.attn_only,
            normalization_type="LN",
            positional_embedding_type="standard",
            seed=self.seed,
            model_name="workbench-native",
            device="cpu",
        )


# Presets. `tiny` trains in seconds (tests); `attn2` is the two-layer attention-only
# induction-head model; `default` is the demo model; `small` wants a GPU.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=64),
    "attn2": ModelConfig(
        n_layers=2, d_model=128, n_heads=8, d_head=16, d_mlp=512, n_ctx=128, attn_only=True
    ),
    "default": ModelConfig(n_layers=4, d_model=128, n_heads=2, d_head=64, d_mlp=512, n_ctx=128),
    "small": ModelConfig(n_layers=8, d_model=512, n_heads=8, d_head=64, d_mlp=2048, n_ctx=256),
}


def get_preset(name: str) -> ModelConfig:
    """The `ModelConfig` of a preset name.

    >>> get_preset("tiny").n_layers
    2
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


# Training settings of each preset (`TRAIN_PRESETS` below)
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. `batch_size` is global (summed over data-parallel ranks)."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_windows: int = 64
    log_interval: int = 10
    ckpt_interval: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_interval", "log_interval", "ckpt_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}; it must be >= 1")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps}; it must be >= 0")
        if not 0 < self.lr < 1:
            raise ValueError(f"TrainConfig.lr={self.lr}; use a learning rate in (0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio={self.min_lr_ratio}; it must be in [0, 1]")

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig(
            **{**asdict(self), **{k: v for k, v in changes.items() if v is not None}}
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup_steps=50, eval_interval=500,
                        ckpt_interval=500, eval_windows=16),
    "attn2": TrainConfig(steps=4000, batch_size=32, lr=2e-3, warmup_steps=100),
    # 4000 steps (2 epochs of the default world). On the world with in-context updates the
    # model starts following "news" only between steps 1500 and 2048 and keeps sharpening
    # to 4000. With 2 heads of 64 per layer (4 x 32 spread induction over four heads of
    # 0.05-0.32 nats each) one head carries induction (0.70-0.77; ablation 2-6 nats on
    # training seeds 0 and 1, 0.7 each for two layer-2 heads on seed 2). At step 1500 its
    # keys come straight from a previous-token head (0.43-0.56) on all three seeds; by
    # 2500 a layer-1/2 head relays that head's output and becomes the largest *direct*
    # source, while mean-ablating the previous-token head still takes 0.63-0.70 of the
    # induction score through the keys (`K_path_all`).
    "default": TrainConfig(steps=4000, batch_size=32, lr=2e-3, warmup_steps=100),
    "small": TrainConfig(steps=5000, batch_size=64, lr=6e-4, warmup_steps=200, ckpt_interval=1000),
}
