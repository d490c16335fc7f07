"GraLoRA beyond the PEFT table (test_peft.py): layers the blocks don't fit, per-layer ranks PEFT can't load."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged


@pytest.mark.parametrize("kw,phrase", [(dict(r=6, gralora_k=3), "must divide both widths"),
                                       (dict(r=8, gralora_k=4, rank_pattern={"q_proj": 6}), "not divisible")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, ll.GraloraConfig(**kw))
    assert "model.layers.0.self_attn.q_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_export_refuses_per_layer_ranks(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.GraloraConfig(r=8, rank_pattern={"q_proj": 4}))
    with pytest.raises(ValueError, match="one r and one alpha"): ll.to_peft(m, tmp_path / "p")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kw", [{}, dict(hybrid_r=2)])
def test_decode_form_equals_training_form(kw, dtype):
    "Eval with no gradient wanted runs the cached decode form: the training form's logits (fp32 and a bf16 base), one token and a prompt."
    kw = dict(kw); bias = kw.pop("bias", False)
    m = tiny_qwen3(attention_bias=bias).to(dtype)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None: mod.bias.normal_(0, 0.5)   # a bias the form must carry
    V = ll.variant_class("gralora")
    ll.attach(m, ll.get_config("gralora", **{**V.example, **kw, "dtype": torch.float32}),
              calibration_data=[torch.randint(0, 128, (2, 16))] if V.needs_calibration else None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad: p.add_(0.2 * torch.randn(p.shape, generator=g).to(p.dtype))
    m.eval()
    for ids in (torch.randint(0, 128, (1, 1)), torch.randint(0, 128, (2, 5))):
        with torch.no_grad(): dec = m(ids).logits.float()                   # the decode form
        ref = m(ids).logits.float()                                         # gradients wanted: the training form
        tol = 1e-5 if dtype == torch.float32 else 2 ** -6
        assert (dec - ref).abs().max() <= tol * ref.abs().max(), (dec - ref).abs().max()
    assert all("PQ" in ll.cached_values(l) for l in ll.adapter_layers(m).values())
