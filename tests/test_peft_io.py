"PEFT folders: damaged or unsupported ones are refused clearly (model untouched); to_peft is atomic. Parity: test_peft.py."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, perturb_adapter

peft = pytest.importorskip("peft")
from peft import get_peft_model, LoraConfig


@pytest.fixture(scope="module")
def base():
    return tiny_qwen3(attention_bias=True)


def _peft_trained(base, pcfg, ids, tmp_path):
    pm = get_peft_model(copy.deepcopy(base), pcfg)
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        pm(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    perturb_adapter(pm, std=0.05)               # a few steps move IA3 too little to see; make sure nothing is trivial
    pm.eval(); pm.save_pretrained(tmp_path)
    return pm(ids).logits


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
