"""PEFT 0.21.2 is the oracle for Lily: to_peft/from_peft logits for both published configs and a layer subset with three
B_e, PEFT's grouping of shared tensors (copies equal, one kept; a grouping lora_lite can't reproduce refused), trainable
counts (PEFT's and its published Llama-3.2-3B counts), the batch dependence PEFT has too, the refusals of a method with
no fixed ΔW, 4/8-bit bases, and a training run against PEFT's loss curve."""
import copy, os
import pytest, torch
from safetensors.torch import load_file, save_file
import lora_lite as ll
from lora_lite.core import Variant
from lora_lite.helpers import tiny_qwen3
from conftest import (snapshot, assert_unchanged, train_steps, logits, perturb_adapter, trainable, llama32_3b, to_peft_matches,
                      from_peft_matches, assert_peft_round_trip, assert_quant_ok, assert_trains_like_peft)
from realistic import train_curve

peft = pytest.importorskip("peft")
QV, MLP = ["q_proj", "v_proj"], ["gate_proj", "up_proj", "down_proj"]
PUBLISHED = [dict(r=140, scaling=8.0, stride_A=14, num_B=2, target_modules=MLP),   # lily/llama-3.2-3B-rank140-mlp-a2-b2-s8.0
             dict(r=896, scaling=2.0, stride_A=14, num_B=2, target_modules=QV)]    # lily/llama-3.2-3B-rank896-a2-b2-s2.0
CASES = PUBLISHED + [dict(r=4, scaling=1.5, stride_A=2, num_B=3, target_modules=QV + MLP + ["k_proj", "o_proj"],
                          layers_to_transform=[1, 2, 3])]                          # blocks 1-3: A groups {1, 2}, {3}
LAYERS = 4


def base(): return tiny_qwen3(n_layers=LAYERS)


def ours(kw):
    k = dict(kw)
    return ll.LilyConfig(r=k["r"], alpha=k["scaling"], stride_A=k["stride_A"], num_B=k["num_B"],
                         target_names=tuple(k["target_modules"]), layers=k.get("layers_to_transform"))


def peft_made(kw, std=0.1, model=None):
    "A PEFT Lily model moved off its init (shared modules are one parameter in PEFT too: moved once)."
    pm = peft.get_peft_model(model or base(), peft.LilyConfig(**kw))
    perturb_adapter(pm, std=std)
    return pm.eval()


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    b = base(); model = copy.deepcopy(b)
    y0 = logits(model, ids)
    ll.attach(model, ours(kw)); train_steps(model, ids)
    mine = logits(model, ids)
    assert (mine - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    pm, pc = to_peft_matches(model, b, ids, tmp_path / "p", f"Lily {kw}")
    assert pc["peft_type"] == "LILY" and pc["target_modules"] == sorted(kw["target_modules"])
    assert (pc["r"], pc["scaling"], pc["stride_A"], pc["num_B"]) == (kw["r"], kw["scaling"], kw["stride_A"], kw["num_B"])
    keys = load_file(tmp_path / "p" / "adapter_model.safetensors")
    assert len(keys) == 3 * len(ll.adapter_layers(model))                  # PEFT's layout: every layer's copy of A and B
    assert sorted(n.removeprefix("base_model.model.") for n, m in pm.named_modules() if hasattr(m, "lily_A")) == sorted(ll.adapter_layers(model))


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft_made(kw)
    m, cfg = from_peft_matches(pm, base, ids, tmp_path / "p", f"Lily {kw}")
    assert isinstance(cfg, ll.LilyConfig) and (cfg.alpha, cfg.stride_A, cfg.num_B) == (kw["scaling"], kw["stride_A"], kw["num_B"])
    n_pm = {id(p) for p in pm.parameters() if p.requires_grad}               # PEFT's distinct tensors = ours (one per group)
    assert len(n_pm) == sum(1 for p in m.parameters() if p.requires_grad)
    assert_peft_round_trip(m, base, ids, tmp_path / "q")


def test_copies_that_differ_are_refused(tmp_path):
    kw = CASES[2]
    peft_made(kw).save_pretrained(tmp_path / "p")
    f = tmp_path / "p" / "adapter_model.safetensors"
    t = load_file(f)
    k = "base_model.model.model.layers.2.self_attn.q_proj.lily_A.weight"     # layer 2 shares layer 1's A
    t[k] = t[k] + 1e-3
    save_file(t, f)
    m = base(); snap = snapshot(m)
    with pytest.raises(ValueError, match="differs from .*layers.1.self_attn.q_proj"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_grouping_across_kinds_is_refused_or_read(ids, tmp_path):
    "A one-regex target_modules makes PEFT group every layer of one shape: q and o (64 -> 64) share; one kind reads fine."
    peft_made(dict(r=4, scaling=1.0, stride_A=2, target_modules=r".*\.(q_proj|o_proj)")).save_pretrained(tmp_path / "qo")
    m = base(); snap = snapshot(m)
    with pytest.raises(ValueError, match="shares A/B between module kinds"): ll.from_peft(m, tmp_path / "qo")
    assert_unchanged(m, snap)
    pm = peft_made(dict(r=4, scaling=1.0, stride_A=2, target_modules=r".*\.q_proj")); pm.save_pretrained(tmp_path / "q")
    ll.from_peft(m, tmp_path / "q")
    assert (logits(m, ids) - logits(pm, ids)).abs().max() <= 1e-5


def test_shared_tensors_live_once(tmp_path):
    m = base(); ll.attach(m, ll.LilyConfig(r=4, stride_A=3, target_names=QV))
    sh = {n for n, _ in m.ll_shared.named_parameters()}
    assert sh == {"A_q_proj_0", "A_q_proj_1", "A_v_proj_0", "A_v_proj_1", "B_q_proj", "B_v_proj"}   # 4 blocks, stride 3
    layers = ll.adapter_layers(m)
    assert [layers[f"model.layers.{i}.self_attn.q_proj"].a_name for i in range(LAYERS)] == ["A_q_proj_0"] * 3 + ["A_q_proj_1"]
    f = ll.save(m, tmp_path / "a.safetensors")
    assert {k for k in load_file(f) if k.startswith("ll_shared.")} == {f"ll_shared.{n}" for n in sh}
    assert not any(k.endswith(("A_q_proj_0", "B_q_proj")) and not k.startswith("ll_shared.") for k in load_file(f))


def test_batch_dependence_is_peft_s(tmp_path):
    "A sequence's logits change when another joins its batch, by the same amounts in PEFT and here."
    pm = peft_made(PUBLISHED[1]); pm.save_pretrained(tmp_path / "p")
    m = base(); ll.from_peft(m, tmp_path / "p")
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(4))
    for model in (pm, m):
        alone, joined = logits(model, ids[:1])[0], logits(model, ids)[0]
        assert (alone - joined).abs().max() > 1e-3
    assert (logits(m, ids[:1]) - logits(pm, ids[:1])).abs().max() <= 1e-5
    assert (logits(m, ids) - logits(pm, ids)).abs().max() <= 1e-5


def test_no_fixed_delta_refusals(monkeypatch, tmp_path):
    m = base(); ll.attach(m, ll.LilyConfig(**ll.Lily.example))
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    assert not ll.Lily.has_delta
    with pytest.raises(NotImplementedError, match="no fixed ΔW"): layer.delta_weight(m.model.layers[0].self_attn.q_proj)
    snap = snapshot(m)
    with pytest.raises(RuntimeError, match="no fixed ΔW"): ll.merged_state_dict(m)
    with pytest.raises(RuntimeError, match="no fixed ΔW"): ll.save_merged(m, tmp_path / "merged")
    monkeypatch.setattr(ll.Lily, "peft_export", classmethod(Variant.peft_export.__func__))   # the LoRA fallback
    with pytest.raises(ValueError, match="no fixed ΔW"): ll.to_peft(m, tmp_path / "p")
    assert_unchanged(m, snap); assert not (tmp_path / "merged").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("kw", PUBLISHED, ids=str)
def test_trainable_count_equals_peft(kw):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = dict(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=16, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128)
    with torch.device("meta"): m, other = Qwen3ForCausalLM(Qwen3Config(**c)), Qwen3ForCausalLM(Qwen3Config(**c))
    ll.attach(m, ours(kw))
    pm = peft.get_peft_model(other, peft.LilyConfig(**kw))
    assert trainable(m) == pm.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("kw,published", list(zip(PUBLISHED, [9_485_280, 18_450_432])), ids=str)
def test_llama_3b_count_is_peft_published(kw, published):
    m = llama32_3b(); ll.attach(m, ours(kw))
    assert trainable(m) == published


def test_bench_is_the_published_config():
    b = ll.Lily.bench
    assert b["lr"] == 1e-4 and ours(PUBLISHED[0]) == ll.LilyConfig(**{k: v for k, v in b.items() if k != "lr"})


@pytest.mark.parametrize("field,value", [("r", 0), ("stride_A", 0), ("num_B", 1), ("num_B", 2.0), ("init_weights", "yes"),
                                         ("rank_pattern", {"q": 2}), ("alpha_pattern", {"q": 2.0})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.LilyConfig(**{field: value})


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_bases(quant):
    pytest.importorskip("bitsandbytes")
    assert_quant_ok(ll.LilyConfig(r=8, alpha=2.0, stride_A=2, target_names=("proj",)), quant, "Lily", attention_bias=True)


def test_trains_like_peft():
    "From PEFT's own init, six AdamW steps on a model with a trained-like spectrum give PEFT's loss curve."
    assert_trains_like_peft(peft.LilyConfig(r=8, scaling=2.0, stride_A=2, num_B=2, target_modules=QV + MLP), "Lily", lr=1e-2)



def smollm2_sized(seed=0):
    "A Llama with SmolLM2-135M's linear shapes (hidden 576, MLP 1536, 30 blocks; vocab cut to 2048), trained-like spectra."
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                     num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in n:
                o, i = mod.weight.shape; k = min(o, i)
                U, V = (torch.linalg.qr(torch.randn(d, k, generator=g))[0] for d in (o, i))
                s = torch.arange(1, k + 1).float() ** -0.6
                mod.weight.copy_((U * (s / s.norm() * mod.weight.norm())) @ V.T)
    return m.eval()


@pytest.mark.skipif(os.environ.get("LL_SLOW") != "1", reason="about 2 minutes on a 2-core CPU: LL_SLOW=1 runs it")
def test_trains_like_peft_smollm2_sized(tmp_path):
    "The published r=140 MLP config on SmolLM2-135M's shapes (A groups of 14, 14 and 2 blocks): six AdamW steps = PEFT's."
    pm = peft.get_peft_model(smollm2_sized(), peft.LilyConfig(**PUBLISHED[0])); pm.save_pretrained(tmp_path)
    mine = smollm2_sized(); ll.from_peft(mine, tmp_path)
    assert len([n for n, _ in mine.ll_shared.named_parameters() if n.startswith("A_")]) == 9
    data = [torch.randint(0, 2048, (2, 64), generator=torch.Generator().manual_seed(5))] * 6
    theirs, ours_ = train_curve(pm, data, lr=1e-3), train_curve(mine, data, lr=1e-3)
    d = max(abs(a - b) for a, b in zip(theirs, ours_))
    print(f"Lily SmolLM2-sized losses PEFT {[round(x, 5) for x in theirs]} ours max|diff| {d:.1e}")
    assert theirs[-1] < theirs[0] - 1e-2 and d <= 1e-5
