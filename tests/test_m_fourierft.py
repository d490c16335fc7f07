"FourierFT beyond the PEFT table (test_peft.py): PEFT's frequencies, per-layer counts in PEFT, too-small layers, the FFT forward."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import assert_attach_refused

peft = pytest.importorskip("peft")


@pytest.mark.parametrize("kw", [dict(n_frequency=50), dict(n_frequency=300, random_loc_seed=5)], ids=str)
def test_frequencies_equal_peft(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.FourierFTConfig(target_modules=["q_proj", "v_proj"], **kw))
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(**kw))
    for n, l in ll.adapter_layers(m).items():
        assert torch.equal(l.idx, pm.base_model.model.get_submodule(n).indices["default"]), n


def test_per_layer_counts_export_as_n_frequency_pattern(tmp_path):
    "Parity of the export is in test_peft.py; here: PEFT builds the per-layer count it was given."
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(n_frequency=40, n_frequency_pattern={r"layers\.1\.self_attn\.v_proj": 90}))
    assert {n: l.r for n, l in ll.adapter_layers(m).items()}["model.layers.0.self_attn.v_proj"] == 40
    ll.to_peft(m, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(tiny_qwen3(), tmp_path / "p")
    assert pm.base_model.model.model.layers[1].self_attn.v_proj.fourierft_spectrum["default"].numel() == 90


def test_layer_too_small_is_named_and_model_unchanged():
    assert_attach_refused(ll.FourierFTConfig(n_frequency=3000), "n_frequency=3000", "model.layers.0.self_attn.v_proj")   # v_proj 64->32 has 2048 entries, q_proj 4096


def test_export_refuses_frequencies_peft_would_not_draw(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(n_frequency=50))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.q_proj"]
    with torch.no_grad(): layer.idx[1, 0] = (layer.idx[1, 0] + 1) % layer.d_in
    with pytest.raises(ValueError, match="model.layers.1.self_attn.q_proj"): ll.to_peft(m, tmp_path / "p")


def test_fft_forward_matches_peft_dense_path_on_many_tokens():
    "The two-FFT hook equals x·ΔWᵀ with PEFT's dense ΔW (ifft2) on a batch of sequences, at Qwen3-0.6B's q_proj widths."
    from lora_lite.variants.fourierft import FourierFT
    torch.manual_seed(0)
    f = FourierFT(ll.FourierFTConfig(n_frequency=5000, alpha=300.0), 1024, 2048); f.init(None)
    x = torch.randn(2, 7, 1024)
    with torch.no_grad(): got, ref = f(x, torch.zeros(2, 7, 2048)), x @ f.delta_weight(None).T
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
