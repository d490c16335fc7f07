"""VeRA beyond the PEFT table (test_peft.py: to_peft/from_peft logits, round trips, counts, bad values): the shared pair
bit for bit, stored once (file and buffers), edits through one layer's view, files for other widths, decode freshness."""
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import train_steps, assert_decode_fresh, assert_other_width_file_refused

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=16), dict(r=80, projection_prng_key=7)], ids=str)
def test_projections_equal_peft_bit_for_bit(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.VeraConfig(target_modules=QV, **kw))
    A, B = pm.base_model.vera_A["default"], pm.base_model.vera_B["default"]
    m = tiny_qwen3(); ll.attach(m, ll.VeraConfig(**kw))
    assert torch.equal(m.ll_shared.A, A) and torch.equal(m.ll_shared.B, B)      # one pair, PEFT's shapes and values
    for n, l in ll.adapter_layers(m).items():
        assert torch.equal(l.A, A[:, :l.d_in]) and torch.equal(l.B, B[:l.d_out]), n
        assert torch.equal(l.lambda_d, pm.base_model.model.get_submodule(n).vera_lambda_d["default"]), n


def test_adapter_for_other_widths_is_refused_and_model_unchanged(tmp_path):
    "VeRA takes any layer width; what can fail is a PEFT file made for another model: one clear error, model untouched."
    assert_other_width_file_refused(peft.VeraConfig(r=16, target_modules=QV), tmp_path / "p")


def test_export_without_projection_refuses_an_edited_pair(tmp_path):
    "The pair is one tensor (an edit through one layer's slice is every layer's); save_projection=False needs the seeded draw."
    m = tiny_qwen3(); ll.attach(m, ll.VeraConfig(r=16, save_projection=False))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.A[0, 0] += 1
    assert all(l.A[0, 0] == layer.A[0, 0] for l in ll.adapter_layers(m).values())
    with pytest.raises(ValueError, match="save_projection=True"): ll.to_peft(m, tmp_path / "p")


def _v06b(n_blocks):
    "A Qwen3 with Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the CPU."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=n_blocks,
                                        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False))


def test_file_and_buffers_at_qwen06b_widths_match_peft(tmp_path):
    "The shared pair is stored once: adapter file and frozen memory within 1.1x of PEFT's (a copy per layer was 13x at 8 blocks)."
    m = _v06b(2); ll.attach(m, ll.VeraConfig(r=256))
    ours_buf = sum(b.numel() * b.element_size() for n, b in m.named_buffers() if n.startswith("ll_shared.") or ".ll_adapter." in n)
    ours_file = ll.save(m, tmp_path / "a.safetensors").stat().st_size
    pm = peft.get_peft_model(_v06b(2), peft.VeraConfig(r=256, target_modules=QV))
    theirs_buf = sum(b.numel() * b.element_size() for n, b in pm.named_buffers() if "vera_" in n)
    pm.save_pretrained(tmp_path / "p")
    theirs_file = (tmp_path / "p" / "adapter_model.safetensors").stat().st_size
    print(f"VeRA r=256, 2 blocks at Qwen3-0.6B widths: file {ours_file:,} vs PEFT {theirs_file:,} B; buffers {ours_buf:,} vs {theirs_buf:,} B")
    assert ours_buf == theirs_buf == 256 * (1024 + 2048) * 4
    assert ours_file <= 1.1 * theirs_file


def test_decode_outputs_are_fresh(ids):
    "VeRA has no parameter-only work to cache; no-grad forwards still equal the autograd path and follow in-place edits."
    m = tiny_qwen3(); ll.attach(m, ll.VeraConfig(r=16)); train_steps(m, ids, steps=1)
    assert_decode_fresh(m, ids, ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"].lambda_b)
