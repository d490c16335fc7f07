"SHiRA beyond the PEFT table (test_peft.py): positions (PEFT's, in the file, through save/load), small layers, the inference paths."
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from lora_lite.variants.shira import shira_positions
from conftest import perturb_adapter, snapshot, assert_unchanged, logits

peft = pytest.importorskip("peft")


def test_positions_travel_in_the_file(ids, tmp_path):
    "The exported indices are used by PEFT (not re-drawn from the seed): move our positions off the seed's and compare."
    base = tiny_qwen3(); fresh = copy.deepcopy(base)
    ll.attach(base, ll.SHiRAConfig(r=4, random_seed=1)); perturb_adapter(base, std=0.5)
    with torch.no_grad():
        for l in ll.adapter_layers(base).values(): l.idx.copy_(shira_positions(l.d_in, l.d_out, l.n, 99))
    ll.to_peft(base, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    assert (logits(pm, ids) - logits(base, ids)).abs().max().item() <= 1e-5


def test_same_seed_same_positions_as_peft():
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.ShiraConfig(r=4, random_seed=42, target_modules=["q_proj", "v_proj"]))
    ll.attach(base, ll.SHiRAConfig(r=4, random_seed=42))
    for n, l in ll.adapter_layers(base).items():
        ij = pm.get_submodule("base_model.model." + n).shira_indices["default"].long()
        assert torch.equal(ij[0] * l.d_in + ij[1], l.idx), n


def test_save_load_keeps_positions_without_redrawing(ids, tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4, random_seed=5)); perturb_adapter(m, std=0.5)
    with torch.no_grad():
        for l in ll.adapter_layers(m).values(): l.idx.copy_(shira_positions(l.d_in, l.d_out, l.n, 6))
    y = logits(m, ids); f = ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    ll.load(m, f)
    assert torch.equal(logits(m, ids), y)
    assert all(l.idx.dtype == torch.long for l in ll.adapter_layers(m).values())


def test_too_small_layer_refused_by_name_model_unchanged():
    "v_proj 64->32 has 2048 entries < r(d_in + d_out) = 25·96: one error naming it; q_proj (fine) is not left adapted."
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.v_proj.*use r <= 21"): ll.attach(m, ll.SHiRAConfig(r=25))
    assert_unchanged(m, snap)
    assert len(ll.attach(m, ll.SHiRAConfig(r=25, rank_pattern={"v_proj": 21}))) == 4


def test_per_layer_ranks_refused_at_export(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4, rank_pattern={"v_proj": 2}))
    with pytest.raises(ValueError, match="one r for all layers"): ll.to_peft(m, tmp_path / "p")


@pytest.mark.parametrize("T", [1, 30])   # with autograd: 1 token gathers, 30 use the dense ΔW; without: the CSR ΔW
def test_inference_csr_path_equals_the_training_paths(T):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4)); perturb_adapter(m, std=0.1)
    ids = torch.randint(0, 128, (1, T), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(logits(m, ids), m(ids).logits.detach(), atol=1e-5, rtol=0)   # equal up to summation order
