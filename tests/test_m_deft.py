"PEFT 0.21.2 is the oracle for DeFT (and PaRa): to_peft/from_peft logits, the init, training steps, counts, bad inputs, decode cache."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import (snapshot, assert_unchanged, train_steps, logits, perturb_adapter, trained_pair_diff, trainable, llama32_3b,
                      to_peft_matches, from_peft_matches, assert_peft_round_trip)

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CONFIGS = [dict(r=4, alpha=16.0), dict(r=4, decomposition_method="qr"), dict(r=4, para=True, decomposition_method="qr"),
           dict(r=4, para=True), dict(r=48, alpha=64.0), dict(r=4, alpha=8.0, init_weights=False, init_scale=2.0)]


def _peft_cfg(kw):
    c = ll.DeftConfig(**kw)
    return peft.DeftConfig(r=c.r, alpha=c.alpha, decomposition_method=c.decomposition_method, para=c.para,
                           init_weights=c.init_weights, init_scale=c.init_scale, deft_dropout=c.deft_dropout, target_modules=QV)


def _copy_into_peft(ours, pm):
    "Our P, R into PEFT's layers (same init for both)."
    with torch.no_grad():
        for n, l in ll.adapter_layers(ours).items():
            t = pm.base_model.model.get_submodule(n)
            t.deft_P["default"].copy_(l.P)
            if not l.cfg.para: t.deft_R["default"].copy_(l.R)


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(attention_bias=True); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.DeftConfig(**kw))
    train_steps(model, ids)
    ours = logits(model, ids)
    assert (ours - y0).abs().max() > 1e-3, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"DeFT {kw}")
    assert pc["peft_type"] == "DEFT" and sorted(pc["target_modules"]) == sorted(ll.adapter_layers(model))


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(tiny_qwen3(attention_bias=True), _peft_cfg(kw))
    perturb_adapter(pm, std=0.1)
    make = lambda: tiny_qwen3(attention_bias=True)
    base, cfg = from_peft_matches(pm, make, ids, tmp_path / "p", f"DeFT {kw}", moved=1e-3)
    assert isinstance(cfg, ll.DeftConfig) and (cfg.r, cfg.para, cfg.decomposition_method) == (kw["r"], kw.get("para", False), kw.get("decomposition_method", "relu"))
    assert_peft_round_trip(base, make, ids, tmp_path / "q")


@pytest.mark.parametrize("kw", [dict(r=4, alpha=16.0), dict(r=4, decomposition_method="qr")], ids=str)
def test_init_matches_peft_and_is_identity(ids, kw):
    "Given PEFT's P, our init computes PEFT's R (= ρᵀW/s); both models start at the base model."
    m, pm = tiny_qwen3(attention_bias=True), peft.get_peft_model(tiny_qwen3(attention_bias=True), _peft_cfg(kw))
    y0 = logits(m, ids)
    ll.attach(m, ll.DeftConfig(**kw))
    worst = 0.0
    for n, l in ll.adapter_layers(m).items():
        t = pm.base_model.model.get_submodule(n)
        with torch.no_grad():
            l.P.copy_(t.deft_P["default"])                     # the init's R formula, on PEFT's P
            R = l.project()[1].T @ ll.dense_weight(m.get_submodule(n)) / l.scale; l.R.copy_(R)
        worst = max(worst, (R - t.deft_R["default"]).abs().max().item())
    assert worst <= 1e-6, worst
    assert (logits(m, ids) - y0).abs().max() <= 1e-5 and (logits(pm, ids) - y0).abs().max() <= 1e-5


@pytest.mark.parametrize("kw", [dict(r=4, alpha=16.0), dict(r=4, decomposition_method="qr"), dict(r=4, para=True, decomposition_method="qr")], ids=str)
def test_training_steps_match_peft(ids, kw):
    "Same init, same AdamW steps (realistic-scale weights: the tiny model's own init): the logits stay equal."
    ours_m, pm = tiny_qwen3(attention_bias=True), peft.get_peft_model(tiny_qwen3(attention_bias=True), _peft_cfg(kw))
    ll.attach(ours_m, ll.DeftConfig(**kw)); _copy_into_peft(ours_m, pm)
    d = trained_pair_diff(ours_m, pm, ids, steps=4)
    print(f"DeFT {kw} after 4 AdamW steps each, max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw,published", [(dict(r=32, alpha=128), 9_175_040),                                  # deft/llama-3.2-3B-rank32
                                          (dict(r=32, para=True, decomposition_method="qr"), 3_670_016)], ids=str)  # …-rank32-para
def test_trainable_count_equals_peft_published(kw, published):
    m = llama32_3b(); ll.attach(m, ll.DeftConfig(**kw))
    ours, theirs = trainable(m), trainable(peft.get_peft_model(llama32_3b(), _peft_cfg(kw)))
    small = tiny_qwen3(); ll.attach(small, ll.DeftConfig(**{**kw, "r": 48}))         # r capped at v_proj's 32 outputs, as PEFT
    small_peft = peft.get_peft_model(tiny_qwen3(), _peft_cfg({**kw, "r": 48}))
    print(f"DeFT {kw} trainable on Llama-3.2-3B: ours {ours:,} PEFT {theirs:,} published {published:,}")
    assert ours == theirs == published
    assert trainable(small) == trainable(small_peft)


def test_gpt2_conv1d_matches_peft(tmp_path):
    "Conv1D (GPT-2's fused c_attn, with bias): W is read transposed, and PEFT loads our export with fan_in_fan_out."
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    m = copy.deepcopy(base); ids = torch.randint(0, 128, (2, 10))
    y0 = logits(m, ids)
    ll.attach(m, ll.DeftConfig(r=4, alpha=16.0, target_names=("c_attn",)))
    assert (logits(m, ids) - y0).abs().max() <= 1e-5
    train_steps(m, ids)
    ll.to_peft(m, tmp_path / "p")
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    d = (logits(m, ids) - logits(pm, ids)).abs().max().item()
    assert (logits(m, ids) - y0).abs().max() > 1e-3 and d <= TOL, d


@pytest.mark.parametrize("field,value", [("alpha", 0), ("alpha", -1.0), ("alpha", True), ("decomposition_method", "svd"),
                                         ("para", "yes"), ("init_weights", 1), ("init_scale", float("nan")),
                                         ("deft_dropout", 1.0), ("rank_pattern", {"q_proj": 8}), ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.DeftConfig(**{field: value})


def test_unbound_layer_and_bad_file_leave_model_unchanged(tmp_path):
    l = ll.Deft(ll.DeftConfig(r=2), 8, 8)
    with pytest.raises(RuntimeError, match="not bound"): l(torch.randn(1, 8), torch.randn(1, 8))
    pm = peft.get_peft_model(tiny_qwen3(), _peft_cfg(dict(r=4)))
    pm.save_pretrained(tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps({**pc, "decomposition_method": "svd"}))
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="decomposition_method"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_decode_cache_is_used_and_fresh(ids):
    m = tiny_qwen3(); ll.attach(m, ll.DeftConfig(r=4, decomposition_method="qr")); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    calls = []
    layer.project = lambda f=layer.project: calls.append(1) or f()        # count the parameter-only work (the QR)
    a, b = logits(m, ids), logits(m, ids)
    assert len(calls) == 1, "the QR was redone although no parameter changed"
    with torch.no_grad(): layer.P.add_(0.05)
    c = logits(m, ids)
    assert len(calls) == 2 and (c - a).abs().max() > 1e-4 and torch.equal(a, b)
    # autograd path: never cached, PEFT's order (the inference form sums in another order: equal to rounding)
    assert torch.allclose(m(ids).logits.detach(), c, atol=1e-6, rtol=0) and len(calls) == 3
