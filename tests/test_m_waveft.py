"PEFT 0.21.2 is the oracle for WaveFT: positions and ΔW, to_peft/from_peft logits, counts (and the published 280,000), training, bad inputs."
import copy, json
import pytest, torch
from torch import nn
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants.waveft import WaveFT, wave_positions
from conftest import (assert_attach_refused, snapshot, assert_unchanged, train_steps, logits, perturb_adapter, trainable, llama32_3b, to_peft_matches,
                      from_peft_matches, assert_peft_round_trip, curves_match_peft)

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CASES = [dict(n_frequency=50), dict(n_frequency=200, scaling=3.0, random_loc_seed=5, use_idwt=False),
         dict(n_frequency=60, init_weights=False, n_frequency_pattern={"q_proj": 90})]


def _ours(kw):
    "PEFT's field names -> ours (PEFT's `scaling` is our `alpha`)."
    kw = dict(kw); kw["alpha"] = kw.pop("scaling", 25.0); return kw


@pytest.mark.parametrize("d_out,d_in", [(6, 8), (7, 5), (32, 64), (33, 17)])
@pytest.mark.parametrize("use_idwt", [True, False])
def test_delta_weight_and_positions_equal_peft(d_out, d_in, use_idwt):
    "Our ΔW (band positions, Haar synthesis, pad/crop) equals PEFT's get_delta_weight (its waverec2d) for the same spectrum."
    m = nn.Sequential(); m.x = nn.Linear(d_in, d_out)
    pm = peft.get_peft_model(m, peft.WaveFTConfig(n_frequency=15, scaling=3.0, use_idwt=use_idwt, target_modules=["x"]))
    L = pm.base_model.model.x
    f = WaveFT(ll.WaveFTConfig(n_frequency=15, alpha=3.0, use_idwt=use_idwt), d_in, d_out); f.init(None)
    with torch.no_grad():
        L.waveft_spectrum["default"].normal_(generator=torch.Generator().manual_seed(0)); f.spectrum.copy_(L.waveft_spectrum["default"])
        d = (f.delta_weight(None) - L.get_delta_weight("default")).abs().max().item()
    assert d <= 1e-6 * 3, f"max|ΔW diff| {d:.2e}"
    p, q = L.waveft_indices["default"]
    assert torch.equal(torch.stack([p, q]), wave_positions(777, 15, d_in, d_out, use_idwt=False))


def _train(model, ids, steps=3):
    train_steps(model, ids, steps); return logits(model, ids)


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.WaveFTConfig(**_ours(kw)))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    pm, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"WaveFT {kw}")
    assert pc["peft_type"] == "WAVEFT" and pc["scaling"] == kw.get("scaling", 25.0)
    for n, l in ll.adapter_layers(model).items(): assert pm.get_submodule(f"base_model.model.{n}").waveft_n_frequency["default"] == l.r, n


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.WaveFTConfig(target_modules=QV, **kw))
    perturb_adapter(pm, std=0.02)                                           # off PEFT's zero init
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"WaveFT {kw}")
    assert isinstance(cfg, ll.WaveFTConfig) and cfg.alpha == kw.get("scaling", 25.0)
    for n, l in ll.adapter_layers(base).items(): assert l.r == pm.get_submodule(f"base_model.model.{n}").waveft_n_frequency["default"], n
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


def test_proportional_parameters_folder_imports(ids, tmp_path):
    "PEFT's proportional_parameters gives each layer its own n; the counts come from the tensors."
    pm = peft.get_peft_model(tiny_qwen3(), peft.WaveFTConfig(target_modules=QV, n_frequency=100, proportional_parameters=True))
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    pm.save_pretrained(tmp_path); pm.eval()
    base = tiny_qwen3(); ll.from_peft(base, tmp_path)
    assert {l.r for l in ll.adapter_layers(base).values()} == {133, 67}     # q 64->64 and v 64->32: 2:1 of 400
    assert (logits(base, ids) - logits(pm, ids)).abs().max() <= TOL


def test_trainable_count_equals_peft_and_published():
    "PEFT's waveft/llama-3.2-3B-n_frequency-5000: 280,000 trainable parameters (its result file)."
    ours = llama32_3b(); ll.attach(ours, ll.get_config("waveft", **{k: v for k, v in ll.WaveFT.bench.items() if k != "lr"}))
    pc = json.loads('{"n_frequency": 5000, "scaling": 25.0, "wavelet_family": "db1", "use_idwt": true, "random_loc_seed": 777, '
                    '"init_weights": true, "target_modules": ["q_proj", "v_proj"]}')   # the experiment's adapter_config.json
    pm = peft.get_peft_model(llama32_3b(2), peft.WaveFTConfig(**pc))
    print(f"WaveFT trainable on Llama-3.2-3B: ours {trainable(ours):,}; PEFT on 2 blocks {trainable(pm):,}")
    assert trainable(ours) == 280_000 and trainable(pm) * 14 == 280_000   # PEFT on 2 of the 28 blocks (its init is slow on meta)
    small = tiny_qwen3(); ll.attach(small, ll.WaveFTConfig(n_frequency=77, n_frequency_pattern={"v_proj": 11}))
    psmall = peft.get_peft_model(tiny_qwen3(), peft.WaveFTConfig(n_frequency=77, n_frequency_pattern={"v_proj": 11}, target_modules=QV))
    assert trainable(small) == trainable(psmall) == 2 * (77 + 11)


def test_training_equals_peft(ids):
    "Five AdamW steps from the same (zero) init: lora_lite and PEFT give the same losses and logits (tiny Qwen3, trained weights)."
    base = tiny_qwen3(hidden=128)
    with torch.no_grad():                                                   # realistic-ish weights: a low-rank-plus-noise spectrum
        for n, p in base.named_parameters():
            if p.ndim == 2: p.copy_(p + 0.5 * torch.randn(p.shape[0], 4) @ torch.randn(4, p.shape[1]) / p.shape[1] ** 0.5)
    ours, theirs = copy.deepcopy(base), peft.get_peft_model(copy.deepcopy(base), peft.WaveFTConfig(n_frequency=500, target_modules=QV))
    ll.attach(ours, ll.WaveFTConfig(n_frequency=500))
    a, b = curves_match_peft(ours, theirs, ids, "WaveFT", lr=1e-3)   # 5 AdamW steps each
    print(f"WaveFT logits after 5 steps: max|diff| {(a - b).abs().max():.2e} of max|logit| {b.abs().max():.2f}")
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()                     # fp32 rounding, amplified a little by Adam's 1/√v


@pytest.mark.parametrize("field,value", [("n_frequency", 0), ("n_frequency", 2.5), ("random_loc_seed", -1), ("init_weights", "no"),
                                         ("use_idwt", 1), ("wavelet_family", "coif1"), ("alpha", float("nan")),
                                         ("n_frequency_pattern", {"q_proj": 0}), ("alpha_pattern", {"q_proj": 2.0})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.WaveFTConfig(**{field: value})


def test_other_wavelet_family_folder_is_refused_and_model_unchanged(tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(), peft.WaveFTConfig(n_frequency=20, wavelet_family="db2", target_modules=QV))
    pm.save_pretrained(tmp_path)
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="wavelet_family='db2' is not implemented"): ll.from_peft(m, tmp_path)
    assert_unchanged(m, snap)


def test_layer_too_small_is_named_and_model_unchanged():
    assert_attach_refused(ll.WaveFTConfig(n_frequency=3000), "n_frequency=3000", "model.layers.0.self_attn.v_proj")   # v_proj 64->32 has 2048 entries


def test_export_refuses_positions_peft_would_not_draw(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.WaveFTConfig(n_frequency=50))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.q_proj"]
    with torch.no_grad(): layer.idx[1, 0] = (layer.idx[1, 0] + 1) % layer.d_in
    with pytest.raises(ValueError, match="model.layers.1.self_attn.q_proj"): ll.to_peft(m, tmp_path / "p")


def test_hook_matches_dense_at_llama_widths():
    "The analysis/gather/scatter/synthesis hook equals x·ΔWᵀ with the dense ΔW at Llama-3.2-3B's v_proj (3072->1024), n=5000."
    f = WaveFT(ll.WaveFTConfig(n_frequency=5000, init_weights=False), 3072, 1024); f.init(None)
    x = torch.randn(2, 7, 3072, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): got, ref = f(x, torch.zeros(2, 7, 1024)), x @ f.delta_weight(None).T
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
