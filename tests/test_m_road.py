"RoAd beyond the PEFT table (test_peft.py): training vs PEFT, groups that don't tile a layer, PEFT files for other widths."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, trained_pair_diff

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("v,g,bias", [("road_2", 32, False), ("road_4", 16, True)])
def test_training_steps_match_peft(ids, v, g, bias):
    "Same init (identity), same AdamW steps: the logits stay equal (the gradients are PEFT's too)."
    ours = tiny_qwen3(hidden=128, attention_bias=bias)
    pm = peft.get_peft_model(tiny_qwen3(hidden=128, attention_bias=bias), peft.RoadConfig(variant=v, group_size=g, target_modules=QV))
    ll.attach(ours, ll.RoadConfig(road_variant=v, group_size=g))
    assert trained_pair_diff(ours, pm, ids) <= 1e-5


def test_layer_the_groups_do_not_tile_is_refused_and_model_unchanged():
    m = tiny_qwen3(hidden=128); snap = snapshot(m)                          # v_proj: 128 -> 64
    with pytest.raises(ValueError, match="group_size=128 does not divide model.layers.0.self_attn.v_proj"):
        ll.attach(m, ll.RoadConfig(group_size=128))
    assert_unchanged(m, snap)


def test_peft_adapter_for_other_widths_is_refused(tmp_path):
    peft.get_peft_model(tiny_qwen3(hidden=128), peft.RoadConfig(group_size=64, target_modules=QV)).save_pretrained(tmp_path / "p")
    m = tiny_qwen3(hidden=192); snap = snapshot(m)                          # v_proj 192 -> 96: 64 doesn't divide it
    with pytest.raises(ValueError, match="group_size=64"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)
