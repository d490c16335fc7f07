"Shared pytest fixtures: tiny offline models and calibration batches."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import copy
import pytest, torch
import lora_lite as ll

torch.set_num_threads(1)   # tiny models: one thread is fastest, and two threads on a loaded 2-core box are far slower
from lora_lite.checks import tiny_qwen3, toy_model


def snapshot(model):
    "Everything detach/failed-attach must leave unchanged: tensors, requires_grad, hooks, module tree."
    return {"params": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
            "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
            "modules": [n for n, _ in model.named_modules()],
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
            "attached": ll.is_attached(model)}


def assert_unchanged(model, snap):
    now = snapshot(model)
    assert now["modules"] == snap["modules"], "module tree changed"
    assert now["hooks"] == snap["hooks"], "hooks changed"
    assert now["attached"] == snap["attached"]
    assert now["params"].keys() == snap["params"].keys()
    for n, (v, rg) in snap["params"].items():
        assert torch.equal(now["params"][n][0], v), f"{n} changed"
        assert now["params"][n][1] == rg, f"requires_grad of {n} changed"
    for n, v in snap["buffers"].items():
        assert torch.equal(now["buffers"][n], v), f"buffer {n} changed"


def token_batches(vocab=128, n=3, bs=2, T=12, seed=0):
    "Random token batches with left padding and prompt labels masked (-100), as calibration_data."
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (bs, T), generator=g)
        am = torch.ones(bs, T, dtype=torch.long); am[0, :3] = 0
        labels = ids.clone(); labels[:, :5] = -100
        out.append({"input_ids": ids, "attention_mask": am, "labels": labels})
    return out


def perturb_adapter(model, std=0.05, seed=0):
    "Move every trainable adapter tensor off its init (so parity tests can't pass trivially)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.fixture
def qwen():
    return tiny_qwen3()


@pytest.fixture
def ids():
    return torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
