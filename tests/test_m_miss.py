"MiSS beyond the PEFT table (test_peft.py): layers that can't take it, PEFT's 'bat' form refused."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")


@pytest.mark.parametrize("kw,phrase", [(dict(r=128), "wider than"), (dict(r=8, init_weights="mini", mini_r=3), "mini_r=3")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, ll.MissConfig(**kw))
    assert "model.layers.0.self_attn.q_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_peft_bat_adapter_is_refused_with_the_reason(tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(), peft.MissConfig(r=8, init_weights="bat", target_modules=["q_proj", "v_proj"]))
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="bat"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)
