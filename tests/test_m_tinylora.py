"PEFT 0.21.2 is the oracle for TinyLoRA: A, B, P and groups, to_peft/from_peft logits (both published configs), counts (3,584 and 64), training, 4/8-bit bases."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants.tinylora import TinyLora, tinylora_groups
from conftest import (logits, train_steps, structured_qwen3, snapshot, assert_unchanged, trainable, llama32_3b, to_peft_matches,
                      from_peft_matches, assert_peft_round_trip, curves_match_peft)
from realistic import load_q

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
PUBLISHED = [dict(weight_tying=0.0), dict(weight_tying=1.0)]             # tinylora/llama-3.2-3B-default, -weight-tying (r=2, u=64)
CASES = PUBLISHED + [dict(u=8, weight_tying=0.5, r=4), dict(u=16, projection_seed=3, save_projection=False)]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft(model, **kw): return peft.get_peft_model(model, peft.TinyLoraConfig(target_modules=kw.pop("target_modules", QV), **kw))


@pytest.mark.parametrize("n,t", [(n, t) for n in (1, 2, 7, 10, 56) for t in (0.0, 0.25, 0.5, 0.75, 1.0)])
def test_groups_and_factors_equal_peft(n, t):
    "Each layer's group, A, B and P are PEFT's (same SVD, same seeded draw), for 7 target kinds over blocks of a tiny Qwen3."
    blocks = -(-n // 7)
    base = tiny_qwen3(n_layers=blocks)
    names = [f"model.layers.{b}.{'mlp' if k in ALL[4:] else 'self_attn'}.{k}" for b in range(blocks) for k in ALL][:n]
    cfg = dict(u=4, weight_tying=t, r=3)
    pm = _peft(copy.deepcopy(base), target_modules=names, **cfg)
    ours = copy.deepcopy(base); ll.attach(ours, ll.TinyLoraConfig(target_names=[f"^{x}$" for x in names], **cfg))
    L = ll.adapter_layers(ours)
    assert list(L) == names and [l.group for l in L.values()] == tinylora_groups(n, t)
    for x, l in L.items():
        p = pm.get_submodule(f"base_model.model.{x}")
        assert p._tinylora_v_key["default"] == str(l.group), x
        for k in "ABP": assert torch.equal(getattr(l, k), getattr(p, f"tinylora_{k}")["default"]), (x, k)
    assert trainable(ours) == trainable(pm) == 4 * (max(tinylora_groups(n, t)) + 1)


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.TinyLoraConfig(**kw))
    train_steps(model, ids, lr=0.05); ours = logits(model, ids)
    assert (ours - y0).abs().max() > 1e-3, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"TinyLoRA {kw}")
    assert pc["peft_type"] == "TINYLORA" and pc["weight_tying"] == kw.get("weight_tying", 0.0)


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = _peft(tiny_qwen3(), **kw)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))   # off PEFT's zero init
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"TinyLoRA {kw}", moved=1e-3)
    assert isinstance(cfg, ll.TinyLoraConfig) and cfg.weight_tying == kw.get("weight_tying", 0.0)
    assert [n for n, p in base.named_parameters() if p.requires_grad] == ["ll_shared.v"]
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


def test_export_refuses_projection_peft_would_not_draw(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.TinyLoraConfig(u=4, save_projection=False))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.q_proj"]
    with torch.no_grad(): layer.P.mul_(2)
    with pytest.raises(ValueError, match="model.layers.1.self_attn.q_proj"): ll.to_peft(m, tmp_path / "p")


@pytest.mark.parametrize("tying,published", [(0.0, 3584), (1.0, 64)])
def test_trainable_count_equals_peft_and_published(tying, published):
    "PEFT's tinylora/llama-3.2-3B-default and -weight-tying: 3,584 and 64 trainable parameters (its result files)."
    ours = llama32_3b(); ll.attach(ours, ll.get_config("tinylora", weight_tying=tying, **{k: v for k, v in TinyLora.bench.items() if k != "lr"}))
    pc = json.loads('{"r": 2, "u": 64, "projection_seed": 42, "save_projection": true, "init_weights": true, "tinylora_dropout": 0.0}')
    pm = peft.get_peft_model(llama32_3b(), peft.TinyLoraConfig(weight_tying=tying, **pc))   # target_modules None: q_proj, v_proj
    print(f"TinyLoRA (tying {tying}) trainable on Llama-3.2-3B: ours {trainable(ours):,}; PEFT {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == published


def test_training_equals_peft(ids):
    "Five AdamW steps (lr 1e-2) from v = 0: the same losses as PEFT on a tiny Qwen3 with trained-looking weights (decaying spectra)."
    base = structured_qwen3(hidden=128)
    for kw in PUBLISHED:
        ours, theirs = copy.deepcopy(base), _peft(copy.deepcopy(base), **kw)
        ll.attach(ours, ll.TinyLoraConfig(**kw))
        a, b = curves_match_peft(ours, theirs, ids, f"TinyLoRA {kw}")   # 5 AdamW steps each
        assert (a - b).abs().max() <= TOL


bnb = pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_bases(ids, tmp_path, quant):
    "4-bit and 8-bit bases: A, B from the dequantized W, identity at init, a finite gradient on v, exact save/load and detach."
    tiny_qwen3(hidden=128).save_pretrained(tmp_path / "m")
    load = lambda: load_q(tmp_path / "m", quant).train()
    m = load(); y0 = logits(m, ids); snap = snapshot(m)
    ll.attach(m, ll.TinyLoraConfig(u=8, weight_tying=0.5, target_names=("proj",)))
    assert torch.equal(logits(m, ids), y0)
    n, l = next(iter(ll.adapter_layers(m).items()))
    U, S, Vh = torch.linalg.svd(ll.dense_weight(m.get_submodule(n)))
    torch.testing.assert_close(l.B @ l.A, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2], rtol=0, atol=1e-5)
    m(ids, labels=ids).loss.backward()
    g = m.ll_shared.v.grad
    assert g is not None and torch.isfinite(g).all() and (g != 0).all()
    torch.optim.SGD([m.ll_shared.v], lr=1.0).step()
    y1 = logits(m, ids); assert (y1 - y0).abs().max() > 1e-4
    ll.save(m, tmp_path / "a.safetensors")
    m2 = load(); ll.load(m2, tmp_path / "a.safetensors"); assert torch.equal(logits(m2, ids), y1)
    ll.detach(m); assert torch.equal(logits(m, ids), y0); assert_unchanged(m, snap)
