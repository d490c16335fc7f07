"PEFT 0.21.2 is the oracle for UniLoRA: the index assignment and scales, θ's init, to_peft/from_peft logits, count (256), training, 4/8-bit bases."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants.unilora import UniLora
from conftest import (logits, train_steps, structured_qwen3, snapshot, assert_unchanged, trainable, llama32_3b, to_peft_matches,
                      from_peft_matches, curves_match_peft)
from realistic import load_q

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
PUBLISHED = dict(r=32, theta_d_length=256, proj_seed=42)                   # unilora/llama-3.2-3B-default
CASES = [PUBLISHED, dict(r=4, theta_d_length=64, save_indices=True), dict(r=8, theta_d_length=1000, proj_seed=3, init_weights=False),
         dict(r=4, theta_d_length=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])]


def _ours(kw):
    kw = dict(kw)
    if "target_modules" in kw: kw["target_names"] = kw.pop("target_modules")
    return ll.UniLoraConfig(**kw)
def _peft(model, **kw): return peft.get_peft_model(model, peft.UniLoraConfig(**{"target_modules": QV, **kw}))


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_indices_scales_and_theta_equal_peft(ids, kw, dtype):
    "From the same seed: every layer's indices, every entry's scale (rounded to the base dtype, as PEFT does) and θ are PEFT's; so are the logits."
    base = tiny_qwen3().to(dtype)
    torch.manual_seed(7); pm = _peft(copy.deepcopy(base), **kw)
    ours = copy.deepcopy(base); torch.manual_seed(7); ll.attach(ours, _ours(kw))
    L = ll.adapter_layers(ours)
    assert list(L) == [n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "unilora_indices_A")]
    inv = ours.ll_shared.inv_sqrt_count
    for n, l in L.items():
        p = pm.get_submodule(f"base_model.model.{n}")
        for k in "AB":
            i = getattr(l, f"idx_{k}")
            assert torch.equal(i.long(), p.__getattr__(f"unilora_indices_{k}")["default"]), (n, k)
            assert torch.equal(inv[i], p.__getattr__(f"unilora_scales_{k}")["default"].float()), (n, k)
    assert torch.equal(ours.ll_shared.theta, pm.base_model.unilora_theta_d["default"])
    d = (logits(ours, ids).float() - logits(pm, ids).float()).abs().max().item()
    assert d <= (TOL if dtype == torch.float32 else 0.0), d
    assert trainable(ours) == trainable(pm) == kw["theta_d_length"]


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    ll.attach(model, _ours(kw))
    train_steps(model, ids, lr=0.05)
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"UniLoRA {kw}")
    assert pc["peft_type"] == "UNILORA" and pc["theta_d_length"] == kw["theta_d_length"]


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = _peft(tiny_qwen3(), **kw)
    with torch.no_grad(): pm.base_model.unilora_theta_d["default"].normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"UniLoRA {kw}", moved=1e-3)
    assert isinstance(cfg, ll.UniLoraConfig) and cfg.r == kw["r"] and cfg.save_indices == kw.get("save_indices", False)
    ours = logits(base, ids)
    ll.save(base, tmp_path / "a.safetensors")                              # our file: θ and the d scales, no indices
    from safetensors import safe_open
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f: assert sorted(f.keys()) == ["ll_shared.inv_sqrt_count", "ll_shared.theta"]
    fresh = tiny_qwen3(); ll.load(fresh, tmp_path / "a.safetensors")
    assert torch.equal(logits(fresh, ids), ours)
    ll.to_peft(base, tmp_path / "q"); again = tiny_qwen3(); ll.from_peft(again, tmp_path / "q")
    assert torch.equal(logits(again, ids), ours)


def test_foreign_saved_indices_are_refused_and_model_unchanged(tmp_path):
    pm = _peft(tiny_qwen3(), r=4, theta_d_length=64, save_indices=True)
    with torch.no_grad(): pm.base_model.model.model.layers[1].self_attn.v_proj.unilora_indices_B["default"][0, 0] += 1
    pm.save_pretrained(tmp_path)
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn\.v_proj's saved unilora_indices_B"): ll.from_peft(m, tmp_path)
    assert_unchanged(m, snap)


def test_trainable_count_equals_peft_and_published():
    "PEFT's unilora/llama-3.2-3B-default: 256 trainable parameters (its result file)."
    ours = llama32_3b(); ll.attach(ours, ll.get_config("unilora", **{k: v for k, v in UniLora.bench.items() if k != "lr"}))
    pc = json.loads('{"r": 32, "theta_d_length": 256, "proj_seed": 42, "init_theta_d_bound": 0.02, "target_modules": ["q_proj", "v_proj"]}')
    pm = peft.get_peft_model(llama32_3b(2), peft.UniLoraConfig(**pc))      # 2 blocks: PEFT's index generation runs on the CPU
    print(f"UniLoRA trainable on Llama-3.2-3B: ours {trainable(ours):,}; PEFT (2 blocks) {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == 256


def test_training_equals_peft(ids):
    "Five AdamW steps from the same seed (same θ): the same losses as PEFT on a tiny Qwen3 with trained-looking weights."
    base = structured_qwen3(hidden=128)
    torch.manual_seed(0); theirs = _peft(copy.deepcopy(base), r=8, theta_d_length=128)
    ours = copy.deepcopy(base); torch.manual_seed(0); ll.attach(ours, ll.UniLoraConfig(r=8, theta_d_length=128))
    a, b = curves_match_peft(ours, theirs, ids, "UniLoRA")   # 5 AdamW steps each
    assert (a - b).abs().max() <= TOL


bnb = pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_bases(ids, tmp_path, quant):
    "4-bit and 8-bit bases: fp32 scales (PEFT casts them to uint8/int8: all 0), a finite gradient on θ, exact save/load and detach."
    tiny_qwen3(hidden=128).save_pretrained(tmp_path / "m")
    load = lambda: load_q(tmp_path / "m", quant).train()
    m = load(); y0 = logits(m, ids); snap = snapshot(m)
    ll.attach(m, ll.UniLoraConfig(r=4, theta_d_length=64, target_names=("proj",)))
    ref = tiny_qwen3(hidden=128); ll.attach(ref, ll.UniLoraConfig(r=4, theta_d_length=64, target_names=("proj",)))
    assert torch.equal(m.ll_shared.inv_sqrt_count, ref.ll_shared.inv_sqrt_count) and m.ll_shared.inv_sqrt_count.min() > 0
    assert 0 < (logits(m, ids) - y0).abs().max() < 0.1                     # θ ~ U(±0.02): off the base by design, a little
    m(ids, labels=ids).loss.backward()
    g = m.ll_shared.theta.grad
    assert g is not None and torch.isfinite(g).all() and (g != 0).all()
    torch.optim.SGD([m.ll_shared.theta], lr=1.0).step()
    y1 = logits(m, ids)
    ll.save(m, tmp_path / "a.safetensors")
    m2 = load(); ll.load(m2, tmp_path / "a.safetensors"); assert torch.equal(logits(m2, ids), y1)
    ll.detach(m); assert torch.equal(logits(m, ids), y0); assert_unchanged(m, snap)
