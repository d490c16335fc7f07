"PEFT is the oracle: IA3, IA3-FF, HRA and EVA on a tiny Qwen3 in fp32 give PEFT's logits (max |diff| <= 1e-5)."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, token_batches, perturb_adapter

peft = pytest.importorskip("peft")
TOL = 1e-5


def _peft_model(base, pcfg):
    return peft.get_peft_model(base, pcfg).eval()


def _copy_into_peft(model, pm, key, fn):
    "Copy each of our layers' tensors into PEFT's `<name>.<key>.default` via fn(our_layer) -> tensor."
    sd = dict(pm.named_parameters())
    n = 0
    with torch.no_grad():
        for name, layer in ll.adapter_layers(model).items():
            p = sd[f"base_model.model.{name}.{key}.default"]
            v = fn(layer)
            assert p.shape == v.shape, (name, p.shape, v.shape)
            p.copy_(v); n += 1
    assert n == len(ll.adapter_layers(model)) and n == sum(k.endswith(f"{key}.default") for k in sd)


def _max_diff(model, pm, ids):
    "max |logits diff| between our model and PEFT's, after checking the adapter really moves the logits."
    with torch.no_grad():
        ours, theirs = model(ids).logits, pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-3, "the adapter is (near) identity: the parity test would be trivial"
    return (ours - theirs).abs().max().item()


# ---------------------------------------------------------------- IA3 / IA3-FF
@pytest.mark.parametrize("bias", [False, True])
def test_ia3_matches_peft(ids, bias):
    base = tiny_qwen3(attention_bias=bias)
    ref = copy.deepcopy(base)
    names = ll.attach(base, ll.IA3Config())
    assert names and all(n.endswith(("k_proj", "v_proj")) for n in names)
    perturb_adapter(base, std=0.3)
    pm = _peft_model(ref, peft.IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[]))
    _copy_into_peft(base, pm, "ia3_l", lambda l: l.l.detach()[:, None])   # PEFT: (d_out, 1)
    d = _max_diff(base, pm, ids)
    print(f"IA3 (attention_bias={bias}) max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def test_ia3_ff_matches_peft(qwen, ids):
    ref = copy.deepcopy(qwen)
    names = ll.attach(qwen, ll.IA3FFConfig())
    assert names and all(n.endswith("down_proj") for n in names)
    perturb_adapter(qwen, std=0.3)
    pm = _peft_model(ref, peft.IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]))
    _copy_into_peft(qwen, pm, "ia3_l", lambda l: l.l.detach()[None, :])   # PEFT: (1, d_in)
    d = _max_diff(qwen, pm, ids)
    print(f"IA3-FF max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


# ---------------------------------------------------------------- HRA
@pytest.mark.parametrize("apply_GS,r", [(False, 4), (False, 8), (True, 3)])
def test_hra_matches_peft(qwen, ids, apply_GS, r):
    ref = copy.deepcopy(qwen)
    ll.attach(qwen, ll.HRAConfig(r=r, apply_GS=apply_GS))
    perturb_adapter(qwen, std=0.2)
    pm = _peft_model(ref, peft.HRAConfig(r=r, apply_GS=apply_GS, target_modules=["q_proj", "v_proj"]))
    _copy_into_peft(qwen, pm, "hra_u", lambda l: l.U.detach().T)   # PEFT: (d_in, r)
    d = _max_diff(qwen, pm, ids)
    print(f"HRA (r={r}, apply_GS={apply_GS}) max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def test_hra_init_is_identity_and_peft_like(qwen, ids):
    with torch.no_grad(): y0 = qwen(ids).logits
    ll.attach(qwen, ll.HRAConfig(r=8))
    with torch.no_grad(): assert (qwen(ids).logits - y0).abs().max() <= 1e-5
    U = ll.adapter_layers(qwen)["model.layers.0.self_attn.q_proj"].U
    assert torch.equal(U[0::2], U[1::2])                      # pairs
    assert U.abs().max() <= 1 / (8 / 2) ** 0.5 + 1e-6          # PEFT's Kaiming bound for a (d_in, r/2) tensor


def test_hra_odd_r_is_a_clear_error(qwen):
    with pytest.raises(ValueError, match="r must be even"): ll.HRAConfig(r=3)
    snap = snapshot(qwen)
    cfg = ll.HRAConfig(r=4); cfg.r = 5                           # a config mutated after validation
    with pytest.raises(ValueError, match="r must be even"): ll.attach(qwen, cfg)
    assert_unchanged(qwen, snap)
    with pytest.raises(ValueError, match="don't fit"): ll.attach(qwen, ll.HRAConfig(r=65, apply_GS=True))
    assert_unchanged(qwen, snap)
