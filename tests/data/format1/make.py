"""How the format-1 fixtures were made: run with lora_lite at commit 919d596 (before shared tensors), e.g.
`git worktree add /tmp/v1 919d596 && PYTHONPATH=/tmp/v1 python tests/data/format1/make.py`. Each file is an adapter
saved by that code (VeRA / RandLoRA keep a copy of the shared random tensors in every layer) plus the logits it gives."""
from pathlib import Path
import torch
from safetensors.torch import save_file
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3

HERE = Path(__file__).parent
TARGETS = ("q_proj", "v_proj", "down_proj")             # d_in 64/64/128, d_out 64/32/64: slices of different widths
CFGS = {"vera": ll.VeraConfig(r=16, target_names=TARGETS), "randlora": ll.RandLoraConfig(r=8, target_names=TARGETS)}
IDS = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))

if __name__ == "__main__":
    assert ll.FORMAT_VERSION == 1, "run this with the format-1 code"
    for name, cfg in CFGS.items():
        m = tiny_qwen3(); ll.attach(m, cfg)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad: p.add_(0.1 * torch.randn(p.shape, generator=g))
            y = m(IDS).logits
        ll.save(m, HERE / f"{name}_v1.safetensors")
        save_file({"ids": IDS, "logits": y}, HERE / f"{name}_v1_expected.safetensors")
        print(name, (HERE / f"{name}_v1.safetensors").stat().st_size)
