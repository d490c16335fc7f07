"VeRA beyond the PEFT table (test_peft.py): PEFT's shared projections bit for bit, files for other widths, exports PEFT can't rebuild."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=16), dict(r=80, projection_prng_key=7)], ids=str)
def test_projections_equal_peft_bit_for_bit(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.VeraConfig(target_modules=QV, **kw))
    A, B = pm.base_model.vera_A["default"], pm.base_model.vera_B["default"]
    m = tiny_qwen3(); ll.attach(m, ll.VeraConfig(**kw))
    for n, l in ll.adapter_layers(m).items():
        assert torch.equal(l.A, A[:, :l.d_in]) and torch.equal(l.B, B[:l.d_out]), n
        assert torch.equal(l.lambda_d, pm.base_model.model.get_submodule(n).vera_lambda_d["default"]), n


def test_adapter_for_other_widths_is_refused_and_model_unchanged(tmp_path):
    "VeRA takes any layer width; what can fail is a PEFT file made for another model: one clear error, model untouched."
    peft.get_peft_model(tiny_qwen3(hidden=64), peft.VeraConfig(r=16, target_modules=QV)).save_pretrained(tmp_path / "p")
    m = tiny_qwen3(hidden=128); snap = snapshot(m)
    with pytest.raises(ValueError, match="shape"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_export_refuses_layers_not_cut_from_one_pair(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.VeraConfig(r=16))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.A[0, 0] += 1
    with pytest.raises(ValueError, match="model.layers.1.self_attn.v_proj"): ll.to_peft(m, tmp_path / "p")
