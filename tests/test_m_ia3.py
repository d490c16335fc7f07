"""PEFT 0.21.2 is the oracle for IA3 in one adapter (`feedforward_modules`): PEFT's default adapters and the three
published MetaMathQA configs import exactly, mixed adapters export exactly, counts equal PEFT's (and its published ones)."""
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged, train_steps, logits, perturb_adapter

peft = pytest.importorskip("peft")
TOL = 1e-5
# PEFT's method_comparison/MetaMathQA/experiments/ia3/*/adapter_config.json (the lr_0.001 one has the default config too)
PUBLISHED = {"llama-3.2-3B-default": dict(target_modules=None, feedforward_modules=None),
             "llama-3.2-3B-all-attn-5k-lr0.005": dict(
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "gate_proj", "up_proj"],
                 feedforward_modules=["down_proj", "gate_proj", "up_proj"])}
PUBLISHED_COUNT = {"llama-3.2-3B-default": 286_720, "llama-3.2-3B-all-attn-5k-lr0.005": 630_784}


def tiny_llama(hidden=64, n_layers=2, device=None, **kw):
    "A tiny random Llama (PEFT's IA3 defaults for llama: k_proj, v_proj, down_proj feed-forward)."
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    c = LlamaConfig(**{**dict(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, tie_word_embeddings=False), **kw})
    with torch.device(device or "cpu"): return LlamaForCausalLM(c).eval()


def _llama_3b(): return tiny_llama(3072, 28, "meta", intermediate_size=8192, num_attention_heads=24, num_key_value_heads=8, head_dim=128)


def _peft_made(make, pcfg, ids, tmp_path):
    "A PEFT IA3 model moved off its init (gains ≠ 1), saved to tmp_path; returns its logits."
    pm = peft.get_peft_model(make(), pcfg)
    perturb_adapter(pm, std=0.3)
    pm.save_pretrained(tmp_path); pm.eval()
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-2, "PEFT's adapter is (near) identity"
    return pm, theirs


@pytest.mark.parametrize("exp", PUBLISHED)
def test_published_configs_import_and_export_exactly(ids, tmp_path, exp):
    pm, theirs = _peft_made(tiny_llama, peft.IA3Config(**PUBLISHED[exp]), ids, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    ff = set(pc["feedforward_modules"])
    m = tiny_llama()
    cfg = ll.from_peft(m, tmp_path / "p")
    assert cfg.variant == "ia3"
    L = ll.adapter_layers(m)
    assert {n.rsplit(".", 1)[1] for n, l in L.items() if l.ff} == ff and any(not l.ff for l in L.values())
    d = (logits(m, ids) - theirs).abs().max().item()
    print(f"IA3 {exp}: from_peft max|diff| vs PEFT {d:.2e}")
    assert d <= TOL
    assert ll.summary(m).trainable == sum(p.numel() for p in pm.parameters() if p.requires_grad)
    train_steps(m, ids)                                                   # to_peft of what was trained here
    ours = logits(m, ids)
    ll.to_peft(m, tmp_path / "q")
    back = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "q").eval()
    d2 = (ours - logits(back, ids)).abs().max().item()
    print(f"IA3 {exp}: to_peft max|diff| vs PEFT {d2:.2e}")
    assert d2 <= TOL


@pytest.mark.parametrize("bias", [False, True])
def test_qwen3_default_and_biased_layers(ids, tmp_path, bias):
    "PEFT's qwen3 default (q, v, down feed-forward) on a model whose q/k/v carry a bias (scaled on output layers only)."
    make = lambda: tiny_qwen3(attention_bias=bias)
    pm, theirs = _peft_made(make, peft.IA3Config(), ids, tmp_path / "p")
    m = make(); ll.from_peft(m, tmp_path / "p")
    assert sorted((n.rsplit(".", 1)[1], l.hook) for n, l in ll.adapter_layers(m).items())[::2] == \
        [("down_proj", "input"), ("q_proj", "output"), ("v_proj", "output")]
    assert (logits(m, ids) - theirs).abs().max() <= TOL
    ours = copy.deepcopy(m); ll.detach(ours)
    ll.attach(ours, ll.IA3Config(target_names=("q_proj", "v_proj", "down_proj"), feedforward_modules=["down_proj"]))
    train_steps(ours, ids); y = logits(ours, ids)
    ll.to_peft(ours, tmp_path / "q")
    pc = json.loads((tmp_path / "q" / "adapter_config.json").read_text())
    assert all(n.endswith("down_proj") for n in pc["feedforward_modules"]) and len(pc["feedforward_modules"]) == 2
    back = peft.PeftModel.from_pretrained(make(), tmp_path / "q").eval()
    assert (y - logits(back, ids)).abs().max() <= TOL


def test_all_feed_forward_imports_as_ia3_ff_and_regex_spec(ids, tmp_path):
    _, theirs = _peft_made(tiny_qwen3, peft.IA3Config(target_modules=["up_proj", "down_proj"], feedforward_modules=["up_proj", "down_proj"]), ids, tmp_path / "a")
    m = tiny_qwen3(); assert ll.from_peft(m, tmp_path / "a").variant == "ia3_ff"
    assert (logits(m, ids) - theirs).abs().max() <= TOL
    pcfg = peft.IA3Config(target_modules=r".*\.(k_proj|v_proj|down_proj)", feedforward_modules=r".*\.down_proj")   # PEFT's regex form
    _, theirs = _peft_made(tiny_qwen3, pcfg, ids, tmp_path / "b")
    m = tiny_qwen3(); assert ll.from_peft(m, tmp_path / "b").variant == "ia3"
    assert (logits(m, ids) - theirs).abs().max() <= TOL


@pytest.mark.parametrize("exp", PUBLISHED)
def test_trainable_count_on_llama_3b_equals_peft_and_published(exp):
    pm = peft.get_peft_model(_llama_3b(), peft.IA3Config(**PUBLISHED[exp]))
    pc = pm.peft_config["default"]
    ours = _llama_3b()
    ll.attach(ours, ll.IA3Config(target_names=[f"{t}$" for t in pc.target_modules], feedforward_modules=sorted(pc.feedforward_modules)))
    n_ours, n_peft = ll.summary(ours).trainable, sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"IA3 {exp} trainable on Llama-3.2-3B: ours {n_ours:,} PEFT {n_peft:,}")
    assert n_ours == n_peft == PUBLISHED_COUNT[exp]


def test_save_load_summary_keep_each_layers_kind(ids, tmp_path):
    m = tiny_qwen3(); cfg = ll.IA3Config(target_names=("k_proj", "down_proj"), feedforward_modules="model.*down_proj")
    ll.attach(m, cfg); perturb_adapter(m, std=0.3); y = logits(m, ids)
    rows = {r["module"].rsplit(".", 1)[1]: r["trainable"] for r in ll.summary(m).rows}
    assert rows == {"k_proj": 32, "down_proj": 128}                       # d_out of k_proj, d_in of down_proj
    ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    m2 = tiny_qwen3(); assert ll.load(m2, tmp_path / "a.safetensors") == cfg
    assert torch.equal(logits(m2, ids), y)
    assert sum(len(x._forward_pre_hooks) for x in m2.modules()) == 2 and sum(len(x._forward_hooks) for x in m2.modules()) == 2


def test_bad_feedforward_specs_are_named_and_leave_the_model_unchanged():
    for bad in [3, [3], ["down_proj", ""], "(", None]:
        with pytest.raises(ValueError, match="feedforward_modules"): ll.IA3Config(feedforward_modules=bad)
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="add it to target_names"): ll.attach(m, ll.IA3Config(feedforward_modules=["down_proj"]))
    assert_unchanged(m, snap)
