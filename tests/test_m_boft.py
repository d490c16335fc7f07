"BOFT beyond the PEFT table (test_peft.py): butterfly factors vs PEFT's dense construction, training vs PEFT, untileable layers."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from lora_lite.variants.boft import butterfly_perm
from conftest import snapshot, assert_unchanged, trained_pair_diff

peft = pytest.importorskip("peft")
from peft.tuners.boft.layer import BOFTLayer


@pytest.mark.parametrize("d,kw", [(64, dict(boft_block_size=4, boft_n_butterfly_factor=2)), (64, dict(boft_block_size=4, boft_n_butterfly_factor=4)),
                                  (96, dict(boft_block_num=12, boft_n_butterfly_factor=3))], ids=str)
def test_butterfly_factors_equal_peft_dense_construction(d, kw):
    "m > 1 needs PEFT's CUDA extension, so compare with PEFT's own permutations, Cayley map and product order, densely."
    lin = torch.nn.Linear(d, 8)
    layer = ll.VARIANTS["boft"](ll.BOFTConfig(**kw), d, 8); layer.init(lin); layer.bind(lin)
    with torch.no_grad(): layer.K.normal_(std=0.3); layer.s.normal_(1.0, 0.1)
    m, n, b = layer.K.shape[:3]
    perms = [BOFTLayer.block_butterfly_perm(None, d, n // 2 ** i, b // 2, m - 1) for i in range(m)]
    for i in range(m): assert torch.equal(butterfly_perm(d, n, b, i), perms[i])
    P = torch.stack([BOFTLayer.perm2mat(None, p) for p in perms])
    with torch.no_grad():
        R = BOFTLayer.cayley_batch(None, layer.K.view(m * n, b, b)).view(m, n, b, b)
        Bs = torch.bmm(P, torch.bmm(torch.stack([torch.block_diag(*R[i]) for i in range(m)]), P.permute(0, 2, 1)))
        M = Bs[0]
        for i in range(1, m): M = Bs[i] @ M                                 # PEFT's order: B_{m-1} ⋯ B_0
        x = torch.randn(5, d)
        theirs = ((lin(x @ M) - lin.bias) * layer.s + lin.bias)              # PEFT's forward with its dense M
        diff = (layer(x, lin(layer.forward_input(x))) - theirs).abs().max().item()   # pre-hook, base layer, output hook
    assert (theirs - lin(x)).abs().max() > 1e-2
    print(f"BOFT {kw} (m={m}) vs PEFT's dense construction: {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("kw,bias", [(dict(), False), (dict(boft_block_size=8), True)], ids=str)
def test_training_steps_match_peft(ids, kw, bias):
    "Same init (identity), same AdamW steps: the logits stay equal (the gradients are PEFT's too)."
    c, ours = ll.BOFTConfig(**kw), tiny_qwen3(attention_bias=bias)
    pm = peft.get_peft_model(tiny_qwen3(attention_bias=bias), peft.BOFTConfig(boft_block_size=c.boft_block_size,
                             boft_block_num=c.boft_block_num, target_modules=["q_proj", "v_proj"]))
    ll.attach(ours, c)
    assert trained_pair_diff(ours, pm, ids) <= 1e-5


@pytest.mark.parametrize("kw", [dict(boft_block_size=24), dict(boft_block_size=8, boft_n_butterfly_factor=5), dict(boft_block_num=3)], ids=str)
def test_layer_the_blocks_do_not_tile_is_refused_and_model_unchanged(kw):
    m = tiny_qwen3(); snap = snapshot(m)                                    # q_proj, v_proj: d_in 64
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj .d_in=64. can't be cut"): ll.attach(m, ll.BOFTConfig(**kw))
    assert_unchanged(m, snap)
