"OFT beyond the PEFT table (test_peft.py): training vs PEFT (COFT's projection), untileable layers, PEFT's adjusted block size."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, trained_pair_diff, assert_attach_refused

peft = pytest.importorskip("peft")


@pytest.mark.parametrize("kw", [dict(oft_block_size=16), dict(oft_block_size=16, coft=True, eps=0.05)], ids=str)
def test_training_steps_match_peft(ids, kw):
    "Same init (R = I), same steps: the logits stay equal, so COFT's in-place projection acts as PEFT's does."
    ours, pm = tiny_qwen3(), peft.get_peft_model(tiny_qwen3(), peft.OFTConfig(r=0, target_modules=["q_proj", "v_proj"], **kw))
    ll.attach(ours, ll.OFTConfig(**kw))
    assert trained_pair_diff(ours, pm, ids) <= 1e-5


@pytest.mark.parametrize("kw,phrase", [(dict(oft_block_size=48), "oft_block_size=32"), (dict(r=5), "r=4"), (dict(r=64), "size 1")], ids=str)
def test_layer_the_blocks_do_not_tile_is_refused_and_model_unchanged(kw, phrase):
    assert_attach_refused(ll.OFTConfig(**kw), phrase)


def test_peft_adapter_with_adjusted_block_size_is_refused(tmp_path):
    "PEFT silently changes a block size that doesn't divide d_in (48 -> 32 on 64 features); we refuse that file clearly."
    with pytest.warns(UserWarning, match="Adjusted"):
        pm = peft.get_peft_model(tiny_qwen3(), peft.OFTConfig(r=0, oft_block_size=48, target_modules=["q_proj", "v_proj"]))
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="would silently switch"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)
