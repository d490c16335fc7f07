"PEFT 0.21.2 is the oracle for BOFT: to_peft/from_peft logits, training steps, butterfly factors vs PEFT's permutations, counts, bad inputs, decode cache."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from lora_lite.variants.boft import butterfly_perm
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
from peft.tuners.boft.layer import BOFTLayer
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CONFIGS = [dict(), dict(boft_block_num=8), dict(boft_block_size=8, bias=True), dict(boft_block_size=4, boft_dropout=0.25)]


def _split(kw):
    "(our BOFTConfig, PEFT's BOFTConfig, model kwargs) for a case."
    kw = dict(kw); bias = kw.pop("bias", False)
    c = ll.BOFTConfig(**kw)
    return c, peft.BOFTConfig(boft_block_size=c.boft_block_size, boft_block_num=c.boft_block_num, boft_dropout=c.boft_dropout,
                              boft_n_butterfly_factor=c.boft_n_butterfly_factor, target_modules=QV), dict(attention_bias=bias)


def _train(model, ids, steps=3, lr=1e-2):
    "A few AdamW steps; returns the logits after (no grad)."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    cfg, _, mk = _split(kw)
    base = tiny_qwen3(**mk); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, cfg)
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "BOFT" and (pc["boft_block_size"], pc["boft_block_num"]) == (cfg.boft_block_size, cfg.boft_block_num)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"BOFT {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CONFIGS + [dict(boft_block_size=4, boft_n_butterfly_factor=2)], ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    "Includes a file PEFT made on CPU with boft_n_butterfly_factor=2: PEFT silently used one factor, and so do we."
    cfg, pcfg, mk = _split(kw)
    pm = peft.get_peft_model(tiny_qwen3(**mk), pcfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.2 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    base = tiny_qwen3(**mk)
    got = ll.from_peft(base, tmp_path / "p")
    assert isinstance(got, ll.BOFTConfig) and got.boft_n_butterfly_factor == 1
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"BOFT {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(**mk); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for k, t in a.state_dict().items(): assert torch.equal(t, b.state_dict()[k]), (n, k)
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


@pytest.mark.parametrize("kw", [dict(), dict(boft_block_size=8, bias=True)], ids=str)
def test_training_steps_match_peft(ids, kw):
    "Same init (identity), same AdamW steps: the logits stay equal (the gradients are PEFT's too)."
    cfg, pcfg, mk = _split(kw)
    ours_m, theirs_m = tiny_qwen3(**mk), peft.get_peft_model(tiny_qwen3(**mk), pcfg)
    ll.attach(ours_m, cfg)
    ours, theirs = _train(ours_m, ids, steps=4), _train(theirs_m, ids, steps=4)
    with torch.no_grad(), theirs_m.disable_adapter(): plain = theirs_m(ids).logits
    assert (theirs - plain).abs().max() > 1e-2
    d = (ours - theirs).abs().max().item()
    print(f"BOFT {kw} after 4 AdamW steps each, max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("d,kw", [(64, dict(boft_block_size=4, boft_n_butterfly_factor=2)), (64, dict(boft_block_size=4, boft_n_butterfly_factor=4)),
                                  (96, dict(boft_block_num=12, boft_n_butterfly_factor=3))], ids=str)
def test_butterfly_factors_equal_peft_dense_construction(d, kw):
    "m > 1 needs PEFT's CUDA extension, so compare with PEFT's own permutations, Cayley map and product order, densely."
    cfg = ll.BOFTConfig(**kw)
    lin = torch.nn.Linear(d, 8)
    layer = ll.VARIANTS["boft"](cfg, d, 8); layer.init(lin); layer.bind(lin)
    with torch.no_grad(): layer.K.normal_(std=0.3); layer.s.normal_(1.0, 0.1)
    m, n, b = layer.K.shape[:3]
    P = torch.stack([BOFTLayer.perm2mat(None, BOFTLayer.block_butterfly_perm(None, d, n // 2 ** i, b // 2, m - 1)) for i in range(m)])
    for i in range(m): assert torch.equal(butterfly_perm(d, n, b, i), BOFTLayer.block_butterfly_perm(None, d, n // 2 ** i, b // 2, m - 1))
    with torch.no_grad():
        R = BOFTLayer.cayley_batch(None, layer.K.view(m * n, b, b)).view(m, n, b, b)
        Bs = torch.bmm(P, torch.bmm(torch.stack([torch.block_diag(*R[i]) for i in range(m)]), P.permute(0, 2, 1)))
        M = Bs[0]
        for i in range(1, m): M = Bs[i] @ M                                 # PEFT's order: B_{m-1} ⋯ B_0
        x = torch.randn(5, d)
        theirs = ((lin(x @ M) - lin.bias) * layer.s + lin.bias)              # PEFT's forward with its dense M
        d_ = (layer(x, lin(layer.forward_input(x))) - theirs).abs().max().item()   # pre-hook, base layer, output hook
    assert (theirs - lin(x)).abs().max() > 1e-2
    print(f"BOFT {kw} (m={m}) vs PEFT's dense construction: {d_:.2e}")
    assert d_ <= TOL


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("kw,expected", [(dict(), 2 * 256 * 16 + 2048 + 1024), (dict(boft_block_num=32), 2 * 32 * 32 * 32 + 3072)], ids=str)
def test_trainable_count_equals_peft(kw, expected):
    cfg, pcfg, _ = _split(kw)
    m = _qwen06b_block(); ll.attach(m, cfg)
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), pcfg)
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"BOFT {kw} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == expected


@pytest.mark.parametrize("field,value", [("boft_block_size", -4), ("boft_block_size", 2.0), ("boft_block_num", -1), ("boft_block_num", True),
                                         ("boft_n_butterfly_factor", 0), ("boft_dropout", 1.0), ("boft_dropout", -0.1),
                                         ("rank_pattern", {"q_proj": 8}), ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.BOFTConfig(**{field: value})


def test_block_size_and_number_together_are_refused():
    with pytest.raises(ValueError, match="exactly one of"): ll.BOFTConfig(boft_block_size=4, boft_block_num=8)


@pytest.mark.parametrize("kw", [dict(boft_block_size=24), dict(boft_block_size=8, boft_n_butterfly_factor=5), dict(boft_block_num=3)], ids=str)
def test_layer_the_blocks_do_not_tile_is_refused_and_model_unchanged(kw):
    m = tiny_qwen3(); snap = snapshot(m)                                    # q_proj, v_proj: d_in 64
    with pytest.raises(ValueError, match="model.layers.0.self_attn.q_proj .d_in=64. can't be cut"): ll.attach(m, ll.BOFTConfig(**kw))
    assert_unchanged(m, snap)


def test_decode_cache_is_used_and_fresh(ids):
    m = tiny_qwen3(); ll.attach(m, ll.BOFTConfig(boft_block_size=8, boft_n_butterfly_factor=2)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): layer.K.mul_(1.0)                                 # an in-place write: the cached R is stale now
    calls = []
    layer.rotation = lambda f=layer.rotation: calls.append(1) or f()
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    assert len(calls) == 1, "R was rebuilt although no parameter changed"
    c = m(ids).logits.detach()                                              # autograd path: never cached
    assert torch.equal(a, b) and torch.equal(a, c) and len(calls) == 2
    with torch.no_grad():
        layer.K.add_(0.05 * torch.randn(layer.K.shape, generator=torch.Generator().manual_seed(0)))   # a constant would leave S = (K - Kᵀ)/2 alone
        d = m(ids).logits
    assert len(calls) == 3 and (d - a).abs().max() > 1e-4
    assert torch.equal(d, m(ids).logits.detach())
