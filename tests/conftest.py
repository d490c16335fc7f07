"Shared pytest fixtures: tiny offline models and calibration batches."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import copy
import pytest, torch
import lora_lite as ll

torch.set_num_threads(1)   # tiny models: one thread is fastest, and two threads on a loaded 2-core box are far slower
from lora_lite.checks import tiny_qwen3, toy_model, snapshot, assert_unchanged   # the strict comparison (tensors+dtypes, flags, hooks, tree, modes)


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


def train_steps(model, ids, steps=3, lr=1e-2):
    "A few AdamW steps on the LM loss, so no adapter tensor is at its init."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()


def logits(m, ids):
    "Logits without autograd."
    with torch.no_grad(): return m(ids).logits


def structured_qwen3(seed=0, decay=0.6, **kw):
    """A tiny Qwen3 whose linear weights look trained rather than random: W = U·diag(σ)·Vᵀ with random orthogonal U, V
    and a power-law spectrum σ_i ∝ (i+1)^-decay (trained LLM weights have decaying spectra with small trailing σ;
    i.i.d. Gaussian weights have a flat Marchenko–Pastur one). Each W keeps its Frobenius norm. For SVD-initialised methods."""
    m = tiny_qwen3(seed=seed, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, lin in m.named_modules():
            if isinstance(lin, torch.nn.Linear) and "lm_head" not in name:
                o, i = lin.weight.shape; k = min(o, i)
                U = torch.linalg.qr(torch.randn(o, k, generator=g))[0]; V = torch.linalg.qr(torch.randn(i, k, generator=g))[0]
                S = (torch.arange(k) + 1.0) ** -decay
                W = U @ torch.diag(S) @ V.T
                lin.weight.copy_(W * lin.weight.norm() / W.norm())
    return m


def same_batches(n=6, bs=4, T=16, vocab=128, seed=0):
    "Fixed token batches for side-by-side training runs."
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (bs, T), generator=g) for _ in range(n)]
