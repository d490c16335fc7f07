"PEFT is the oracle: PiSSA, DoRA and DeLoRA logits equal PEFT's on a tiny Qwen3 (fp32) with the same adapter values."
import copy
import pytest, torch
from torch import nn
import torch.nn.functional as F
import lora_lite as ll
from lora_lite.core import dense_weight
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, perturb_adapter

peft = pytest.importorskip("peft")
TOL = 1e-5


def train_steps(model, ids, n=3, lr=1e-2):
    "A few AdamW steps on the LM loss, so adapter tensors move off their init."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(n):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step(); opt.zero_grad()
    model.eval()


def logits(model, ids):
    with torch.no_grad(): return model(input_ids=ids).logits


def peft_layers(pm, names):
    return {n: pm.base_model.model.get_submodule(n) for n in names}


# ---------------------------------------------------------------- PiSSA
def test_pissa_matches_peft_at_init_and_after_training(qwen, ids):
    base, y0 = copy.deepcopy(qwen), logits(qwen, ids)
    cfg = ll.PiSSAConfig(r=4, alpha=8)
    names = ll.attach(qwen, cfg)
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                   init_lora_weights="pissa"))
    ours, theirs = ll.adapter_layers(qwen), peft_layers(pm, names)
    for n in names:   # same SVD -> the same principal factors
        torch.testing.assert_close(ours[n].A0, theirs[n].lora_A["default"].weight, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours[n].B0, theirs[n].lora_B["default"].weight, atol=1e-5, rtol=0)
    d0 = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d0 <= TOL, d0
    train_steps(qwen, ids)
    with torch.no_grad():   # our trained A, B into PEFT; its residual base made from our A0, B0
        for n in names:
            l, t = ours[n], theirs[n]
            t.lora_A["default"].weight.copy_(l.A); t.lora_B["default"].weight.copy_(l.B)
            t.base_layer.weight.copy_(dense_weight(qwen.get_submodule(n)) - l.scale * l.B0 @ l.A0)
    assert not torch.equal(ours[names[0]].A, ours[names[0]].A0)
    assert (logits(qwen, ids) - y0).abs().max() > 1e-2   # training really changed the model
    d1 = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d1 <= TOL, d1
    print(f"pissa max|diff| vs PEFT: init {d0:.2e}, trained {d1:.2e}")


def test_pissa_lowrank_close_to_full(qwen):
    "Randomised SVD (niter) finds the same principal part as the full SVD when the spectrum decays."
    lin = qwen.model.layers[0].self_attn.q_proj
    with torch.no_grad():   # give the layer a decaying spectrum, as trained weights have
        U, _ = torch.linalg.qr(torch.randn(64, 64)); V, _ = torch.linalg.qr(torch.randn(64, 64))
        lin.weight.copy_(U @ torch.diag(0.5 ** torch.arange(64.)) @ V.T)
    full, fast = [ll.PiSSA(ll.PiSSAConfig(r=4, niter=k), 64, 64) for k in (None, 8)]
    with torch.no_grad(): full.init(lin); fast.init(lin)
    rel = ((fast.B0 @ fast.A0 - full.B0 @ full.A0).norm() / (full.B0 @ full.A0).norm()).item()
    assert rel < 1e-4, rel


def test_pissa_rank_too_large_leaves_model_unchanged(qwen):
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match=r"use r <= 32"):
        ll.attach(qwen, ll.PiSSAConfig(r=48, target_names=("q_proj", "v_proj")))   # v_proj is 64->32
    assert_unchanged(qwen, snap)


# ---------------------------------------------------------------- DoRA
@pytest.mark.parametrize("bias", [False, True])
def test_dora_matches_peft(ids, bias):
    qwen = tiny_qwen3(attention_bias=bias)
    base, y0 = copy.deepcopy(qwen), logits(qwen, ids)
    names = ll.attach(qwen, ll.DoRAConfig(r=4, alpha=8))
    train_steps(qwen, ids)
    perturb_adapter(qwen)   # B, m well away from init
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True))
    ours, theirs = ll.adapter_layers(qwen), peft_layers(pm, names)
    with torch.no_grad():
        for n in names:
            l, t = ours[n], theirs[n]
            t.lora_A["default"].weight.copy_(l.A); t.lora_B["default"].weight.copy_(l.B)
            t.lora_magnitude_vector["default"].weight.copy_(l.m)
    assert (logits(qwen, ids) - y0).abs().max() > 1e-2   # the adapter really changes the model
    d = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d <= TOL, d
    print(f"dora (bias={bias}) max|diff| vs PEFT: {d:.2e}")


def test_dora_fast_norm_equals_naive(qwen, ids):
    ll.attach(qwen, ll.DoRAConfig(r=8, alpha=16, target_names=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")))
    perturb_adapter(qwen, std=0.2)
    for n, l in ll.adapter_layers(qwen).items():
        m = qwen.get_submodule(n)
        naive = (dense_weight(m) + l.scale * l.B @ l.A).norm(dim=1)
        fast = l.weight_norm(l.base_pass(torch.float32)[0])
        torch.testing.assert_close(fast, naive.detach(), atol=1e-6, rtol=1e-5)


def test_dora_conv1d_and_gradients():
    "GPT-2 style Conv1D (transposed weight, bias): hooked output and gradients equal the naive detached-norm DoRA."
    from transformers.pytorch_utils import Conv1D
    torch.manual_seed(0)
    model = nn.Module(); model.q_proj = Conv1D(24, 16); nn.init.normal_(model.q_proj.bias)
    ll.attach(model, ll.DoRAConfig(r=4, alpha=8, target_names="q_proj"))
    perturb_adapter(model, std=0.3)
    l, x = model.q_proj.ll_adapter, torch.randn(2, 5, 16)
    y = model.q_proj(x)
    W = model.q_proj.weight.T
    V = W + l.scale * l.B @ l.A
    ref = F.linear(x, (l.m / V.norm(dim=1).detach())[:, None] * V, model.q_proj.bias)
    torch.testing.assert_close(y, ref)
    for a, b in zip(torch.autograd.grad(y.square().sum(), [l.A, l.B, l.m]), torch.autograd.grad(ref.square().sum(), [l.A, l.B, l.m])):
        torch.testing.assert_close(a, b)
    assert model.q_proj.weight.grad is None


# ---------------------------------------------------------------- DeLoRA
def test_delora_matches_peft(qwen, ids):
    base, y0 = copy.deepcopy(qwen), logits(qwen, ids)
    names = ll.attach(qwen, ll.DeLoRAConfig(r=4, lambda0=15.0))
    train_steps(qwen, ids, lr=1e-3)
    perturb_adapter(qwen)
    pm = peft.get_peft_model(base, peft.DeloraConfig(r=4, delora_lambda=15, target_modules=["q_proj", "v_proj"]))
    ours, theirs = ll.adapter_layers(qwen), peft_layers(pm, names)
    with torch.no_grad():
        for n in names:
            l, t = ours[n], theirs[n]
            torch.testing.assert_close(l.w, t.delora_w_norm["default"])   # same frozen column norms
            t.delora_A["default"].copy_(l.A); t.delora_B["default"].copy_(l.B); t.delora_lambda["default"].copy_(l.lam)
    assert not torch.equal(ours[names[0]].lam, torch.tensor([15.0]))
    assert (logits(qwen, ids) - y0).abs().max() > 1e-2   # the adapter really changes the model
    d = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d <= TOL, d
    print(f"delora max|diff| vs PEFT: {d:.2e}")


# ---------------------------------------------------------------- parameter counts (DESIGN §3, per block at r=32)
@pytest.mark.parametrize("cfg,per_block", [(ll.PiSSAConfig(r=32, alpha=64, niter=1), 163_840),
                                           (ll.DoRAConfig(r=32, alpha=64), 166_912),
                                           (ll.DeLoRAConfig(r=32), 163_842)])
def test_param_counts_qwen3_06b_widths(cfg, per_block):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=128, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1,
                                         num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                         tie_word_embeddings=False)).eval()
    ll.attach(model, cfg)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n == per_block, n
    assert 28 * per_block == {"pissa": 4_587_520, "dora": 4_673_536, "delora": 4_587_576}[cfg.variant]
