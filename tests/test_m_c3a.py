"C3A beyond the PEFT table (test_peft.py): layers whose widths the block size doesn't divide, the default's reach."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import assert_attach_refused


@pytest.mark.parametrize("kw,layer", [(dict(block_size=64), "model.layers.0.self_attn.v_proj"),          # v_proj is 64->32
                                      (dict(block_size=16, block_size_pattern={"q_proj": 48}), "model.layers.0.self_attn.q_proj")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, layer):
    assert_attach_refused(ll.C3AConfig(**kw), "must divide both widths", layer)


def test_default_attaches_to_widths_multiple_of_64():
    m = tiny_qwen3(hidden=128)                                             # v_proj 128->64
    assert len(ll.attach(m, ll.C3AConfig())) == 4 and all(l.r == 64 for l in ll.adapter_layers(m).values())
