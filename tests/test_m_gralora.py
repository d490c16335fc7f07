"GraLoRA beyond the PEFT table (test_peft.py): layers the blocks don't fit, per-layer ranks PEFT can't load."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import assert_attach_refused


@pytest.mark.parametrize("kw,phrase", [(dict(r=6, gralora_k=3), "must divide both widths"),
                                       (dict(r=8, gralora_k=4, rank_pattern={"q_proj": 6}), "not divisible")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    assert_attach_refused(ll.GraloraConfig(**kw), phrase)


def test_export_refuses_per_layer_ranks(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.GraloraConfig(r=8, rank_pattern={"q_proj": 4}))
    with pytest.raises(ValueError, match="one r and one alpha"): ll.to_peft(m, tmp_path / "p")
