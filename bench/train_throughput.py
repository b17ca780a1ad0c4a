"""Training throughput: our training step vs a plain-PyTorch GPT of the same shape.

Three models of one shape (default: 4 layers, d_model 128, T 128, B 32), each trained with
AdamW + gradient clipping on the same random batches, in interleaved rounds in this one
process:

- `workbench`: the trainer's step (FastGPT: fused QKV + scaled_dot_product_attention,
  weights that map exactly onto the hooked TransformerBridge);
- `plain`: a nanoGPT-style GPT with `scaled_dot_product_attention` (the baseline);
- `bridge`: training the hooked TransformerBridge itself (what the core issue measured
  at 0.59x of plain).

Prints tokens/s (median over rounds) and the ratios against `plain`. Goal: workbench >= 0.9x.

    python bench/train_throughput.py [--steps 10] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from workbench.models.config import TrainConfig, get_preset
from workbench.models.loader import build_bridge
from workbench.training.fastgpt import FastGPT, from_bridge_state_dict
from workbench.training.recipe import make_optimizer


class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int, d_mlp: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, n_layers: int, d: int, h: int, d_mlp: int, n_ctx: int, v: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(v, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList([PlainBlock(d, h, d_mlp) for _ in range(n_layers)])
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, v)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def make_step(model: nn.Module, cfg: TrainConfig, device: str):
    opt = make_optimizer(model, cfg)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                else torch.autocast("cpu", enabled=False))

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with autocast:
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bridge", action="store_true", help="skip the bridge baseline")
    args = parser.parse_args()
    torch.manual_seed(0)
    mcfg = get_preset(args.preset).replace(d_vocab=args.vocab)
    tcfg = TrainConfig()
    dev = args.device
    bridge = build_bridge(mcfg)
    fast = FastGPT(mcfg)
    fast.load_state_dict(from_bridge_state_dict(bridge.state_dict(), mcfg))
    plain = PlainGPT(mcfg.n_layers, mcfg.d_model, mcfg.n_heads, mcfg.d_mlp, mcfg.n_ctx,
                     args.vocab)
    models = {"workbench": fast, "plain": plain}
    if not args.no_bridge:
        bridge.train()
        models["bridge"] = bridge
    steps = {name: make_step(m.to(dev).train(), tcfg, dev) for name, m in models.items()}
    x = torch.randint(0, args.vocab, (args.batch_size, mcfg.n_ctx), device=dev)
    y = torch.randint(0, args.vocab, (args.batch_size, mcfg.n_ctx), device=dev)
    tokens = args.batch_size * mcfg.n_ctx * args.steps
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        for _ in range(3):
            step(x, y)
    for _ in range(args.rounds):
        for name, step in steps.items():
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            rates[name].append(tokens / (time.perf_counter() - t0))
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"shape: {args.preset} ({mcfg.n_layers}L d_model {mcfg.d_model} T {mcfg.n_ctx} "
          f"B {args.batch_size} vocab {args.vocab}) on {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} rounds x {args.steps} steps")
    for name, rate in med.items():
        print(f"  {name:10s} {rate:12,.0f} tokens/s   {rate / med['plain']:.2f}x plain")
    ratio = med["workbench"] / med["plain"]
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"ratio workbench/plain = {ratio:.2f} (goal >= 0.90: {verdict})")


if __name__ == "__main__":
    main()
