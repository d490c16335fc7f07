"PiSSA beyond the PEFT table (test_peft.py): PEFT's own PiSSA init (same SVD) at init and after training, randomised SVD, rank limits."
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.core import dense_weight
from conftest import snapshot, assert_unchanged, train_steps, logits
from lora_lite.helpers import tiny_qwen3

peft = pytest.importorskip("peft")


def test_pissa_matches_peft_at_init_and_after_training(qwen, ids):
    base, y0 = copy.deepcopy(qwen), logits(qwen, ids)
    cfg = ll.PiSSAConfig(r=4, alpha=8)
    names = ll.attach(qwen, cfg)
    pm = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                   init_lora_weights="pissa"))
    ours, theirs = ll.adapter_layers(qwen), {n: pm.base_model.model.get_submodule(n) for n in names}
    for n in names:   # same SVD -> the same principal factors
        torch.testing.assert_close(ours[n].A0, theirs[n].lora_A["default"].weight, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours[n].B0, theirs[n].lora_B["default"].weight, atol=1e-5, rtol=0)
    d0 = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d0 <= 1e-5, d0
    train_steps(qwen, ids)
    with torch.no_grad():   # our trained A, B into PEFT; its residual base made from our A0, B0
        for n in names:
            l, t = ours[n], theirs[n]
            t.lora_A["default"].weight.copy_(l.A); t.lora_B["default"].weight.copy_(l.B)
            t.base_layer.weight.copy_(dense_weight(qwen.get_submodule(n)) - l.scale * l.B0 @ l.A0)
    assert not torch.equal(ours[names[0]].A, ours[names[0]].A0)
    assert (logits(qwen, ids) - y0).abs().max() > 1e-2   # training really changed the model
    d1 = (logits(qwen, ids) - logits(pm, ids)).abs().max().item()
    assert d1 <= 1e-5, d1
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


def test_decode_form_is_exactly_the_base_at_init():
    "The decode pair [A − A0; A0], s[B, B − B0] has zero blocks at init: the decoded output is the base's, bit for bit."
    model = tiny_qwen3(); ll.attach(model, ll.get_config("pissa", r=4))
    for n, l in ll.adapter_layers(model).items():
        x = torch.randn(2, 5, l.d_in, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(): y = model.get_submodule(n).forward(x); assert ll.decoding(l) and torch.equal(l(x, y), y)
