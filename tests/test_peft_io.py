"PEFT interop: to_peft for every variant loads in PEFT on the original base; from_peft imports PEFT-made adapters."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, perturb_adapter, token_batches

peft = pytest.importorskip("peft")
from peft import PeftModel, get_peft_model, LoraConfig, IA3Config, HRAConfig, DeloraConfig

SMALL = dict(lora=dict(r=4), pissa=dict(r=4), dora=dict(r=4), delora=dict(r=4), ia3={}, ia3_ff={}, eva=dict(r=4),
             hra=dict(r=4), antipasto=dict(r=8), antipasto_corda=dict(r=8), antipasto_rot=dict(r=8),
             antipasto_ablate=dict(r=8), antipasto_arrow=dict(r=16), c3a=dict(block_size=16), road=dict(group_size=32))   # others: defaults
IMPORTERS = sorted(n for n, c in ll.VARIANTS.items() if c.__dict__.get("peft_type"))   # variants that read PEFT folders
REPARAM = {"pissa"} | {v for v in SMALL if v.startswith("antipasto")}   # export changes parametrisation: 1e-4


@pytest.fixture(scope="module")
def base():
    return tiny_qwen3(attention_bias=True)


def adapted(base, name, **kw):
    m = copy.deepcopy(base)
    cfg = ll.get_config(name, **{**SMALL.get(name, {}), **kw})
    calib = token_batches() if ll.VARIANTS[name].needs_calibration else None
    ll.attach(m, cfg, calibration_data=calib)
    perturb_adapter(m, std=0.05)
    return m


@pytest.mark.parametrize("name", sorted(ll.VARIANTS))
def test_to_peft_loads_in_peft(base, name, ids, tmp_path):
    m = adapted(base, name)
    y = m(ids).logits
    assert (y - base(ids).logits).abs().max() > 1e-3, "adapter must move the outputs for the test to mean anything"
    ll.to_peft(m, tmp_path)
    pm = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    diff = (pm(ids).logits - y).abs().max().item()
    assert diff <= (1e-4 if name in REPARAM else 1e-5), (name, diff)


@pytest.mark.parametrize("name", IMPORTERS)
def test_from_peft_of_to_peft(base, name, ids, tmp_path):
    m = adapted(base, name)
    ll.to_peft(m, tmp_path)
    m2 = copy.deepcopy(base)
    cfg = ll.from_peft(m2, tmp_path)
    assert cfg.variant == name
    assert torch.equal(m2(ids).logits, m(ids).logits)


def _peft_trained(base, pcfg, ids, tmp_path):
    pm = get_peft_model(copy.deepcopy(base), pcfg)
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        pm(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    perturb_adapter(pm, std=0.05)               # a few steps move IA3 too little to see; make sure nothing is trivial
    pm.eval(); pm.save_pretrained(tmp_path)
    return pm(ids).logits


@pytest.mark.parametrize("pcfg,variant", [
    (LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), "lora"),
    (LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj"], layers_to_transform=[1]), "lora"),
    (LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"]), "dora"),
    (IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[]), "ia3"),
    (IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"]), "ia3_ff"),
    (HRAConfig(r=4, target_modules=["q_proj", "v_proj"]), "hra"),
    (DeloraConfig(r=4, target_modules=["q_proj", "v_proj"]), "delora"),
], ids=["lora", "rslora-layers", "dora", "ia3", "ia3_ff", "hra", "delora"])
def test_import_peft_made_adapter(base, pcfg, variant, ids, tmp_path):
    ref = _peft_trained(base, pcfg, ids, tmp_path)
    assert (ref - base(ids).logits).abs().max() > 1e-4
    m = copy.deepcopy(base)
    assert ll.from_peft(m, tmp_path).variant == variant
    diff = (m(ids).logits - ref).abs().max().item()
    assert diff <= 1e-5, diff


def _expect(model, exc, match, fn):
    snap = snapshot(model)
    with pytest.raises(exc, match=match):
        fn()
    assert_unchanged(model, snap)


def test_bad_peft_folders(base, ids, tmp_path):
    m = copy.deepcopy(base)
    _expect(m, FileNotFoundError, "no adapter_config.json", lambda: ll.from_peft(m, tmp_path))
    _peft_trained(base, LoraConfig(r=4, target_modules=["q_proj"]), ids, tmp_path / "lora")
    other = tiny_qwen3(hidden=128)
    _expect(other, ValueError, "another base model", lambda: ll.from_peft(other, tmp_path / "lora"))
    conf = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    for change, match in [(dict(peft_type="LN_TUNING"), "'LN_TUNING' has no lora_lite import"),
                          (dict(peft_type="ADALORA"), "lora_A' is missing for an ADALORA adapter"), (dict(bias="all"), "bias='all'"),
                          (dict(modules_to_save=["lm_head"]), "modules_to_save"),
                          (dict(init_lora_weights="pissa_niter_4"), "path_initial_model_for_weight_conversion"),
                          (dict(target_modules=["wq"]), "match no linear module")]:
        d = tmp_path / f"bad{len(match)}"; d.mkdir()
        (d / "adapter_model.safetensors").write_bytes((tmp_path / "lora" / "adapter_model.safetensors").read_bytes())
        (d / "adapter_config.json").write_text(json.dumps({**conf, **change}))
        _expect(m, ValueError, match, lambda: ll.from_peft(m, d))


def test_to_peft_requires_adapter_and_is_atomic(base, tmp_path):
    m = copy.deepcopy(base)
    with pytest.raises(RuntimeError, match="no lora_lite adapter"):
        ll.to_peft(m, tmp_path)
    ll.attach(m, ll.LoRAConfig(r=4)); ll.to_peft(m, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    before = (tmp_path / "adapter_model.safetensors").read_bytes()
    perturb_adapter(m)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ll.to_peft(m, tmp_path)                                        # a non-empty folder is refused ...
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
    ll.to_peft(m, tmp_path, overwrite=True)                            # ... unless asked
    assert (tmp_path / "adapter_model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
