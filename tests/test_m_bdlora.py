"PEFT 0.21.2 is the oracle for BD-LoRA (LoraConfig(use_bdlora=BdLoraConfig(...))): logits both ways, counts, bad inputs."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import (snapshot, assert_unchanged, train_steps, logits, perturb_adapter, trainable, llama32_3b, to_peft_matches,
                      from_peft_matches, assert_peft_round_trip)

peft = pytest.importorskip("peft")
TOL = 1e-5
MLP_ATTN = ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
CASES = [dict(r=8, nblocks=2), dict(r=8, nblocks=4, use_rslora=True, rank_pattern={"down_proj": 4}, alpha_pattern={"q_proj": 3.0}),
         dict(r=4, nblocks=2, target_modules_bd_a=["down_proj"], target_modules_bd_b=["gate_proj"], match_strict=False)]


def _bd(kw):
    "PEFT's BdLoraConfig fields of one of CASES (lora_lite's defaults where the case leaves them)."
    d = ll.BdLoRAConfig(**{k: v for k, v in kw.items() if k in ("target_modules_bd_a", "target_modules_bd_b", "nblocks", "match_strict")})
    return peft.BdLoraConfig(target_modules_bd_a=list(d.target_modules_bd_a), target_modules_bd_b=list(d.target_modules_bd_b),
                             nblocks=d.nblocks, match_strict=d.match_strict)


def _peft_cfg(kw, targets=MLP_ATTN):
    lora = {k: v for k, v in kw.items() if k in ("r", "use_rslora", "rank_pattern", "alpha_pattern")}
    return peft.LoraConfig(lora_alpha=16, target_modules=targets, use_bdlora=_bd(kw), **lora)


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.BdLoRAConfig(alpha=16, target_names=MLP_ATTN, **kw))
    sides = {l.side for l in ll.adapter_layers(model).values()}
    assert sides == ({"A", "B"} if kw.get("match_strict", True) else {"A", "B", None})
    train_steps(model, ids)
    ours = logits(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"BD-LoRA {kw}")
    assert pc["peft_type"] == "LORA" and pc["use_bdlora"]["nblocks"] == kw["nblocks"]


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(tiny_qwen3(), _peft_cfg(kw))
    perturb_adapter(pm, std=0.1)                                            # B off zero: not the identity
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"BD-LoRA {kw}")
    assert isinstance(cfg, ll.BdLoRAConfig) and cfg.nblocks == kw["nblocks"]
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


def test_init_matches_peft_distribution():
    "Same shapes as PEFT per side; B = 0; a block-diagonal A is Kaiming-uniform with a=0 (PEFT), a dense one with a=√5."
    m = tiny_qwen3(hidden=256, n_layers=1); ll.attach(m, ll.BdLoRAConfig(r=16, target_names=MLP_ATTN))
    pm = peft.get_peft_model(tiny_qwen3(hidden=256, n_layers=1), _peft_cfg(dict(r=16)))
    for n, l in ll.adapter_layers(m).items():
        pa, pb = (pm.get_submodule(f"base_model.model.{n}.lora_{x}.default").weight for x in "AB")
        assert l.A.shape == pa.shape and l.B.shape == pb.shape, n
        assert l.B.abs().max() == 0 == pb.abs().max()
        bound = (6 / l.A.shape[1]) ** 0.5 / (1 if l.side == "A" else 6 ** 0.5)     # kaiming_uniform(a): √(6/((1+a²)fan_in))
        assert 0.9 * bound < l.A.abs().max() <= bound and 0.9 * bound < pa.abs().max() <= bound, n


def test_trainable_count_equals_peft_and_published():
    "PEFT's lora/llama-3.2-3B-rank14-target-mlp-bdlora: 8,429,568 trainable parameters (its result file)."
    ours = llama32_3b(); ll.attach(ours, ll.get_config("bdlora", **{k: v for k, v in ll.BdLoRA.bench.items() if k != "lr"}))
    pc = json.loads('{"r": 14, "lora_alpha": 28, "target_modules": ["gate_proj", "up_proj", "down_proj"], "use_bdlora": '
                    '{"target_modules_bd_a": ["o_proj", "down_proj"], "target_modules_bd_b": ["q_proj", "v_proj", "k_proj", '
                    '"up_proj", "gate_proj"], "nblocks": 2}}')                   # the experiment's adapter_config.json
    pm = peft.get_peft_model(llama32_3b(), peft.LoraConfig(**pc))
    print(f"BD-LoRA trainable on Llama-3.2-3B: ours {trainable(ours):,} PEFT {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == 8_429_568


def test_bad_inputs_are_named_and_leave_the_model_unchanged():
    for bad in [dict(nblocks=0), dict(match_strict=1), dict(target_modules_bd_b="q_proj", target_modules_bd_a=["q_proj"])]:
        with pytest.raises(ValueError, match=next(iter(bad))): ll.BdLoRAConfig(**bad)
    m = tiny_qwen3(); snap = snapshot(m)
    for cfg, phrase in [(ll.BdLoRAConfig(target_names=["q_proj"], target_modules_bd_a=["down_proj"], target_modules_bd_b=["v_proj"]), "match_strict=False"),
                        (ll.BdLoRAConfig(r=6, nblocks=4), "nblocks=4"),
                        (ll.BdLoRAConfig(r=8, nblocks=3), "nblocks=3"),
                        (ll.BdLoRAConfig(target_modules_bd_a=["layers.0"], target_modules_bd_b=["q_proj"]), "select different modules")]:
        with pytest.raises(ValueError, match=phrase): ll.attach(m, cfg)
        assert_unchanged(m, snap)


def test_plain_lora_folder_still_imports_as_lora(ids, tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(), peft.LoraConfig(r=4, target_modules=["q_proj"]))
    pm.save_pretrained(tmp_path)
    assert ll.from_peft(tiny_qwen3(), tmp_path).variant == "lora"


@pytest.mark.parametrize("pad_max", [0, 1 << 16], ids=["blocks", "padded"])
def test_inference_forms_equal_training_form(pad_max, monkeypatch):
    "Both inference forms (block-diagonal factor as its blocks, or made dense: `padded`) equal the training form, one token and a prompt."
    monkeypatch.setattr(ll.BdLoRA, "pad_max", pad_max)
    m = tiny_qwen3()
    ll.attach(m, ll.BdLoRAConfig(r=8, nblocks=4, target_names=tuple(MLP_ATTN)))
    perturb_adapter(m, std=0.2, seed=2)
    m.eval()
    assert all(l.padded == (pad_max > 0) for l in ll.adapter_layers(m).values())
    for ids in (torch.randint(0, 128, (1, 1)), torch.randint(0, 128, (2, 5))):
        with torch.no_grad(): dec = m(ids).logits
        ref = m(ids).logits                                                  # gradients wanted: the training form
        assert (dec - ref).abs().max() <= 1e-5 * ref.abs().max()
