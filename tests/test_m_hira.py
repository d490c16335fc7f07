"HiRA beyond the PEFT table (test_peft.py): per-layer ranks PEFT can't load, a weight that can't be read."
import pytest
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged


def test_per_layer_ranks_refused_at_export(tmp_path):
    "PEFT 0.21.2's HiRA builds every layer with config.r (rank_pattern ignored), so it could not load per-layer ranks."
    m = tiny_qwen3(); ll.attach(m, ll.HiRAConfig(r=4, rank_pattern={"v_proj": 2}))
    assert {l.r for l in ll.adapter_layers(m).values()} == {2, 4}
    with pytest.raises(ValueError, match="rank_pattern"): ll.to_peft(m, tmp_path / "p")


def test_unreadable_layer_fails_at_attach_and_leaves_model_unchanged(monkeypatch):
    "HiRA needs W in every forward, so init reads it once: a layer whose W can't be read (e.g. a CPU-repacked 4-bit "
    "weight) fails at attach, and the model is left as it was."
    import lora_lite.variants.hira as H
    m = tiny_qwen3(); snap = snapshot(m)
    v, real = m.model.layers[1].self_attn.v_proj, H.dense_weight
    def refuse(mod):
        if mod is v: raise RuntimeError("this weight can't be read")
        return real(mod)
    monkeypatch.setattr(H, "dense_weight", refuse)
    with pytest.raises(RuntimeError, match="can't be read"): ll.attach(m, ll.HiRAConfig(r=4))
    assert_unchanged(m, snap)
