"""PEFT 0.21.2 is the oracle, one table for every method. Each registered variant gets, from its `example` and PEFT
facts alone: to_peft -> PeftModel logits, to_peft -> from_peft exact, from_peft of a PEFT-made (perturbed) adapter,
its round trip, and PEFT's trainable count. The tables below add the cases a method's options need (one row each):
TO_PEFT (our configs), FROM_PEFT (PEFT configs), COUNTS (Qwen3-0.6B widths, derived counts), BAD (config values)."""
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import token_batches, perturb_adapter, train_steps, logits

peft = pytest.importorskip("peft")
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

NAMES = sorted(ll.VARIANTS)                                            # every registered variant, new ones included
# PEFT's LoRA-FA is an optimizer over a plain LoRA folder: nothing in the folder says A is frozen, so it reads back as
# `lora` and PEFT counts A as trainable (tests/test_m_lora_fa.py checks its export and the optimizer step)
OPTIMIZER_ONLY = {"lora_fa"}
IMPORTERS = [n for n in NAMES if ll.VARIANTS[n].peft_type and n not in OPTIMIZER_ONLY]   # variants that read PEFT folders
REPARAM = {"pissa"} | {n for n in NAMES if n.startswith("antipasto")}  # the export changes parametrisation: 1e-4
QV, BIAS, WIDE = ["q_proj", "v_proj"], dict(attention_bias=True), dict(hidden=128)
LR = dict(c3a=0.3)                                                     # C3A's ΔW is divided by d_in (PEFT's lr scale)
PERTURB = dict(c3a=2.0, fourierft=0.5, loha=0.3, lokr=0.3, shira=0.3, ia3=0.3, ia3_ff=0.3, boft=0.2, road=0.2, randlora=0.02)

# our configs exported to PEFT (beyond each `example`, which runs on biased attention projections); "model": tiny_qwen3 kwargs
TO_PEFT = dict(
    boft=[dict(), dict(boft_block_num=8), dict(boft_block_size=8, model=BIAS), dict(boft_block_size=4, boft_dropout=0.25)],
    c3a=[dict(block_size=32, block_size_pattern={"v_proj": 8}), dict(block_size=16, init_weights=True)],
    fourierft=[dict(n_frequency=200, alpha=300.0, random_loc_seed=5), dict(n_frequency=50, init_weights=True),
               dict(n_frequency=40, n_frequency_pattern={r"layers\.1\.self_attn\.v_proj": 90})],
    gralora=[dict(r=8, alpha=16), dict(r=8, alpha=12, gralora_k=4, hybrid_r=2)],
    hira=[dict(r=6, init_weights="gaussian", hira_dropout=0.1)],
    hra=[dict(r=8), dict(r=3, apply_GS=True)], ia3=[dict(model={})], dora=[dict(r=4, alpha=8, model={})],
    loha=[dict(r=4, alpha=8), dict(r=8, alpha=4, rank_dropout=0.1, module_dropout=0.1),     # r=4: Khatri-Rao form, r=8: dense
          dict(r=8, alpha=16, rank_pattern={"v_proj": 3}, alpha_pattern={r"layers\.1\.self_attn\.q_proj": 5})],
    lokr=[dict(r=2, alpha=8), dict(r=4, alpha=4, rank_dropout=0.1, rank_dropout_scale=True, module_dropout=0.1),
          dict(r=2, alpha=4, decompose_both=True, decompose_factor=16, init_weights="lycoris"),
          dict(r=4, alpha=16, rank_pattern={"q_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.v_proj": 5})],
    miss=[dict(r=8), dict(r=12), dict(r=8, init_weights="mini", mini_r=4), dict(r=16, init_weights="bat")],   # r=12: the padded last shard
    oft=[dict(), dict(oft_block_size=16, block_share=True), dict(oft_block_size=16, coft=True, eps=0.05),
         dict(oft_block_size=8, use_cayley_neumann=False), dict(r=8, num_cayley_neumann_terms=3)],
    randlora=[dict(r=6, alpha=12, save_projection=False), dict(r=8, sparse=True, projection_prng_key=2)],
    road=[dict(model=WIDE), dict(road_variant="road_2", group_size=32, model=WIDE), dict(road_variant="road_4", group_size=16, model=WIDE),
          dict(road_variant="road_1", group_size=8, model=dict(WIDE, **BIAS)), dict(road_variant="road_4", group_size=64, model=dict(WIDE, **BIAS))],
    shira=[dict(r=4, random_seed=7), dict(r=8)],
    vera=[dict(r=16, save_projection=False), dict(r=80, projection_prng_key=7)],
)
# PEFT-made adapters imported by from_peft (beyond the one PEFT builds from each `example`'s export); "expect": our config fields
FROM_PEFT = dict(
    lora=[dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "k_proj"], layers_to_transform=[1])],
    dora=[dict(r=4, lora_alpha=8, use_dora=True), dict(r=4, lora_alpha=8, use_dora=True, model=BIAS)],
    delora=[dict(r=4, delora_lambda=15)],
    ia3=[dict(target_modules=["k_proj", "v_proj"], feedforward_modules=[], model=BIAS)],
    ia3_ff=[dict(target_modules=["down_proj"], feedforward_modules=["down_proj"])],
    hra=[dict(r=8), dict(r=3, apply_GS=True)],
    boft=[dict(boft_block_size=0, boft_block_num=8), dict(boft_block_size=8, model=BIAS), dict(boft_block_size=4, boft_dropout=0.25),
          dict(boft_block_size=4, boft_n_butterfly_factor=2, expect=dict(boft_n_butterfly_factor=1))],   # PEFT on CPU used 1 factor
    c3a=[dict(block_size=16, block_size_pattern={"v_proj": 8})],
    fourierft=[dict(n_frequency=50, expect=dict(alpha=150.0)), dict(n_frequency=200, scaling=300.0, random_loc_seed=5, expect=dict(alpha=300.0)),
               dict(n_frequency=50, init_weights=True)],
    gralora=[dict(r=8, alpha=16), dict(r=8, alpha=12, gralora_k=4, hybrid_r=2, expect=dict(gralora_k=4, hybrid_r=2))],
    loha=[dict(r=4, alpha=8, rank_pattern={"v_proj": 2}), dict(r=8, alpha=16, rank_pattern={"v_proj": 2}, expect=dict(r=8))],
    lokr=[dict(r=2, alpha=4, rank_pattern={"v_proj": 4}), dict(r=2, alpha=4, rank_pattern={"v_proj": 4}, decompose_both=True, decompose_factor=16)],
    miss=[dict(r=8), dict(r=12), dict(r=8, init_weights="mini", mini_r=4, expect=dict(init_weights="mini")),
          dict(r=16, init_weights="bat", expect=dict(init_weights="bat"))],
    oft=[dict(r=0, oft_block_size=32), dict(r=4, oft_block_size=0), dict(r=0, oft_block_size=16, block_share=True),
         dict(r=0, oft_block_size=16, coft=True, eps=0.05), dict(r=0, oft_block_size=8, use_cayley_neumann=False),
         dict(r=8, oft_block_size=0, num_cayley_neumann_terms=3)],
    randlora=[dict(r=8), dict(r=6, randlora_alpha=12, save_projection=False), dict(r=8, sparse=True, projection_prng_key=2)],
    road=[dict(variant="road_1", group_size=64, model=WIDE), dict(variant="road_2", group_size=32, model=WIDE),
          dict(variant="road_4", group_size=16, model=WIDE), dict(variant="road_1", group_size=8, model=dict(WIDE, **BIAS)),
          dict(variant="road_4", group_size=64, model=dict(WIDE, **BIAS))],
    shira=[dict(r=4, random_seed=42, expect=dict(random_seed=42)), dict(r=4, random_seed=None, expect=dict(random_seed=None))],
    vera=[dict(r=16), dict(r=16, save_projection=False, expect=dict(save_projection=False)), dict(r=32, d_initial=0.5, projection_prng_key=3)],
)
# trainable parameters on one block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024): ours == PEFT's == the derived count
# (name, our config, PEFT config, count per block); x28 blocks gives the published totals (DESIGN §3)
COUNTS = [
    ("lora", dict(r=32, alpha=64), dict(r=32, lora_alpha=64), 32 * (1024 + 2048 + 1024 + 1024)),
    ("pissa", dict(r=32, alpha=64, niter=1), dict(r=32, lora_alpha=64), 4_587_520 // 28),
    ("dora", dict(r=32, alpha=64), dict(r=32, lora_alpha=64, use_dora=True), 4_673_536 // 28),
    ("delora", dict(r=32), dict(r=32), 4_587_576 // 28),
    ("eva", dict(r=32, alpha=64), dict(r=32, lora_alpha=64), 4_587_520 // 28),
    ("hra", dict(r=32, alpha=64), dict(r=32), 1_835_008 // 28),
    ("ia3", {}, dict(target_modules=["k_proj", "v_proj"], feedforward_modules=[]), 57_344 // 28),
    ("ia3_ff", {}, dict(target_modules=["down_proj"], feedforward_modules=["down_proj"]), 86_016 // 28),
    ("loha", dict(r=32, alpha=64), dict(r=32, alpha=64), 9_175_040 // 28),
    ("lokr", dict(r=32, alpha=64), dict(r=32, alpha=64), 143_360 // 28),
    ("lokr", dict(r=32, alpha=64, decompose_factor=4), dict(r=32, alpha=64, decompose_factor=4), 1_147_776 // 28),
    ("hira", dict(r=32), dict(r=32), 4_587_520 // 28),
    ("shira", dict(r=32), dict(r=32), 4_587_520 // 28),
    ("vera", dict(r=256), dict(r=256), (2048 + 256) + (1024 + 256)),
    ("randlora", dict(r=32), dict(r=32), 2 * (32 * 32 + 32 * 1024)),
    ("fourierft", dict(n_frequency=5000), dict(n_frequency=5000), 2 * 5000),
    ("boft", {}, {}, 2 * 256 * 16 + 2048 + 1024),
    ("boft", dict(boft_block_num=32), dict(boft_block_size=0, boft_block_num=32), 2 * 32 * 32 * 32 + 3072),
    ("oft", dict(r=32), dict(r=32, oft_block_size=0), 2 * 32 * 496),
    ("oft", {}, {}, 2 * 32 * 496),
    ("oft", dict(oft_block_size=64, block_share=True), dict(oft_block_size=64, block_share=True), 2 * 2016),
    ("road", dict(road_variant="road_1"), dict(variant="road_1"), 3072),
    ("road", dict(road_variant="road_2"), dict(variant="road_2"), 6144),
    ("road", dict(road_variant="road_4"), dict(variant="road_4"), 12288),
    ("miss", dict(r=64), dict(r=64), 64 * (2048 + 1024)),
    ("miss", dict(r=64, init_weights="mini", mini_r=64), dict(r=64, init_weights="mini", mini_r=64), 2 * 64 * 64),
    ("miss", dict(r=64, init_weights="bat"), dict(r=64, init_weights="bat"), 64 * (2048 + 1024)),
    ("c3a", dict(block_size=64), dict(block_size=64), 1024 * 2048 // 64 + 1024 * 1024 // 64),
    ("c3a", dict(block_size=256, block_size_pattern={"v_proj": 128}), dict(block_size=256, block_size_pattern={"v_proj": 128}),
     1024 * 2048 // 256 + 1024 * 1024 // 128),
    ("gralora", dict(r=32, alpha=64), dict(r=32, alpha=64), 32 * (1024 + 2048 + 1024 + 1024)),
    ("gralora", dict(r=32, alpha=64, gralora_k=4, hybrid_r=8), dict(r=32, alpha=64, gralora_k=4, hybrid_r=8), 40 * (1024 + 2048 + 1024 + 1024)),
]
# config values each variant must refuse with a ValueError naming the field (or the phrase given)
BAD = dict(
    hra=[(dict(r=3), "r must be even")], eva=[(dict(rho=0.5), "rho")],
    loha=[(dict(rank_dropout=1.0), "rank_dropout"), (dict(rank_dropout="0"), "rank_dropout"), (dict(module_dropout=-0.5), "module_dropout"),
          (dict(init_weights="lycoris"), "init_weights"), (dict(r=0), "r"), (dict(alpha=None), "alpha")],
    lokr=[(dict(decompose_factor=0), "decompose_factor"), (dict(decompose_factor=-2), "decompose_factor"),
          (dict(decompose_factor=True), "decompose_factor"), (dict(decompose_both=1), "decompose_both"), (dict(rank_dropout=1.0), "rank_dropout"),
          (dict(module_dropout="0"), "module_dropout"), (dict(rank_dropout_scale=None), "rank_dropout_scale"),
          (dict(init_weights="gaussian"), "init_weights"), (dict(r=0), "r")],
    hira=[(dict(hira_dropout=1.0), "hira_dropout"), (dict(hira_dropout=-0.1), "hira_dropout"), (dict(hira_dropout="0.1"), "hira_dropout"),
          (dict(init_weights="xavier"), "init_weights"), (dict(init_weights=None), "init_weights"), (dict(r=0), "r")],
    shira=[(dict(mask_type="magnitude"), "mask_type"), (dict(random_seed=1.0), "random_seed"), (dict(random_seed="42"), "random_seed"),
           (dict(init_weights=None), "init_weights"), (dict(r=0), "r")],
    vera=[(dict(r=0), "r"), (dict(projection_prng_key=-1), "projection_prng_key"), (dict(projection_prng_key=1.5), "projection_prng_key"),
          (dict(save_projection="yes"), "save_projection"), (dict(vera_dropout=1.0), "vera_dropout"), (dict(vera_dropout=-0.1), "vera_dropout"),
          (dict(d_initial=float("inf")), "d_initial"), (dict(rank_pattern={"q_proj": 8}), "rank_pattern"),
          (dict(alpha_pattern={"q_proj": 8}), "alpha_pattern")],
    randlora=[(dict(r=0), "r"), (dict(projection_prng_key=-1), "projection_prng_key"), (dict(save_projection="yes"), "save_projection"),
              (dict(sparse=1), "sparse"), (dict(very_sparse=None), "very_sparse"), (dict(randlora_dropout=1.0), "randlora_dropout"),
              (dict(alpha=float("nan")), "alpha"), (dict(rank_pattern={"q_proj": 8}), "rank_pattern"), (dict(alpha_pattern={"q_proj": 8}), "alpha_pattern")],
    fourierft=[(dict(n_frequency=0), "n_frequency"), (dict(n_frequency=2.5), "n_frequency"), (dict(random_loc_seed=-1), "random_loc_seed"),
               (dict(init_weights="no"), "init_weights"), (dict(alpha=float("nan")), "alpha"),
               (dict(n_frequency_pattern={"q_proj": 0}), "n_frequency_pattern"), (dict(alpha_pattern={"q_proj": 2.0}), "alpha_pattern")],
    oft=[(dict(r=-1), "r"), (dict(r=2.0), "r"), (dict(oft_block_size=-4), "oft_block_size"), (dict(oft_block_size=0), "oft_block_size"),
         (dict(coft="yes"), "coft"), (dict(eps=-1e-3), "eps"), (dict(eps=float("nan")), "eps"), (dict(block_share=1), "block_share"),
         (dict(use_cayley_neumann=None), "use_cayley_neumann"), (dict(num_cayley_neumann_terms=0), "num_cayley_neumann_terms"),
         (dict(rank_pattern={"q_proj": 8}), "rank_pattern"), (dict(alpha_pattern={"q_proj": 8}), "alpha_pattern"),
         (dict(r=4, oft_block_size=16), "exactly one of r")],
    boft=[(dict(boft_block_size=-4), "boft_block_size"), (dict(boft_block_size=2.0), "boft_block_size"), (dict(boft_block_num=-1), "boft_block_num"),
          (dict(boft_block_num=True), "boft_block_num"), (dict(boft_n_butterfly_factor=0), "boft_n_butterfly_factor"),
          (dict(boft_dropout=1.0), "boft_dropout"), (dict(boft_dropout=-0.1), "boft_dropout"), (dict(rank_pattern={"q_proj": 8}), "rank_pattern"),
          (dict(alpha_pattern={"q_proj": 8}), "alpha_pattern"), (dict(boft_block_size=4, boft_block_num=8), "exactly one of")],
    road=[(dict(road_variant="road_3"), "road_variant"), (dict(road_variant=1), "road_variant"), (dict(group_size=3), "group_size"),
          (dict(group_size=0), "group_size"), (dict(group_size=8.0), "group_size"), (dict(group_size=True), "group_size"),
          (dict(rank_pattern={"q_proj": 8}), "rank_pattern"), (dict(alpha_pattern={"q_proj": 8}), "alpha_pattern")],
    miss=[(dict(r=0), "r"), (dict(r=2.5), "r"), (dict(miss_dropout=1.0), "miss_dropout"), (dict(miss_dropout=-0.1), "miss_dropout"),
          (dict(mini_r=0), "mini_r"), (dict(init_weights="lora"), "init_weights")],
    c3a=[(dict(block_size=0), "block_size"), (dict(block_size=2.0), "block_size"), (dict(block_size_pattern={"q_proj": 0}), "block_size_pattern"),
         (dict(block_size_pattern=[16]), "block_size_pattern"), (dict(init_weights="orthogonal"), "init_weights"),
         (dict(rank_pattern={"q_proj": 8}), "block_size_pattern")],
    gralora=[(dict(r=0), "r"), (dict(gralora_k=0), "gralora_k"), (dict(hybrid_r=-1), "hybrid_r"), (dict(gralora_dropout=1.0), "gralora_dropout"),
             (dict(init_weights="yes"), "init_weights"), (dict(alpha=float("inf")), "alpha"), (dict(r=6, gralora_k=4), "gralora_k")],
)


def _rows(table, generic):
    "pytest params (name, row) for every variant: its generic row (if any) plus the table's rows."
    return [pytest.param(n, row, id=f"{n}-{i}") for n in NAMES
            for i, row in enumerate(([] if generic(n) is False else [generic(n)]) + table.get(n, []))]


def _split(row):
    "(config fields, tiny_qwen3 kwargs, expected config fields) of a table row."
    row = dict(row); return row, row.pop("model", {}), row.pop("expect", {})


EXAMPLE = None   # the generic FROM_PEFT row: the adapter PEFT builds from our `example`'s export


def _moved(a, b, what):
    assert (a - b).abs().max() > 1e-3, f"{what}: the adapter doesn't move the logits; the parity test would be trivial"


def _adapter_state(m): return {k: v for k, v in m.state_dict().items() if ".ll_adapter." in k}


def _assert_same_adapter(a, b, ids):
    "Two models carry the same adapter exactly: tensors and logits."
    sa, sb = _adapter_state(a), _adapter_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(logits(a, ids), logits(b, ids))


@pytest.mark.parametrize("name,row", _rows(TO_PEFT, lambda n: dict(ll.VARIANTS[n].example, model=BIAS)))
def test_to_peft_reproduces_our_logits(name, row, ids, tmp_path):
    "Ours, trained a few steps, exported: PEFT's PeftModel gives our logits; importing the export back is exact."
    kw, mk, _ = _split(row)
    V, base = ll.VARIANTS[name], tiny_qwen3(**mk)
    m = copy.deepcopy(base)
    ll.attach(m, ll.get_config(name, **kw), calibration_data=token_batches() if V.needs_calibration else None)
    train_steps(m, ids, lr=LR.get(name, 1e-2))
    ours = logits(m, ids)
    _moved(ours, logits(base, ids), name)
    ll.to_peft(m, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["peft_type"] == (V.peft_type or "LORA")
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "p").eval()
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"{name} {kw} to_peft -> PEFT max|diff| {d:.2e}")
    assert d <= (1e-4 if name in REPARAM else 1e-5), d
    if V.peft_type and name not in OPTIMIZER_ONLY:                     # from_peft(to_peft(x)) is x, exactly
        back = copy.deepcopy(base)
        assert ll.from_peft(back, tmp_path / "p").variant == name
        assert torch.equal(logits(back, ids), ours)


def _peft_config(name, row, tmp_path):
    "PEFT's config for a FROM_PEFT row; for the generic row (EXAMPLE), the config PEFT reads from our `example`'s export."
    if row is not EXAMPLE:
        return PEFT_TYPE_TO_CONFIG_MAPPING[ll.VARIANTS[name].peft_type](**{"target_modules": QV, **row})
    V, m = ll.VARIANTS[name], tiny_qwen3()
    ll.attach(m, ll.get_config(name, **V.example))
    ll.to_peft(m, tmp_path / "ours")
    pc = peft.PeftConfig.from_pretrained(tmp_path / "ours"); pc.inference_mode = False
    return pc


@pytest.mark.parametrize("name,row", _rows(FROM_PEFT, lambda n: EXAMPLE if n in IMPORTERS else False))
def test_from_peft_reproduces_peft_and_round_trips(name, row, ids, tmp_path):
    "A PEFT-made adapter, moved off PEFT's init: from_peft gives PEFT's logits; to_peft -> from_peft of it is exact."
    kw, mk, expect = _split(row or {})
    base = tiny_qwen3(**mk)
    pm = peft.get_peft_model(copy.deepcopy(base), _peft_config(name, row and kw, tmp_path))
    perturb_adapter(pm, std=PERTURB.get(name, 0.1))
    pm.eval(); pm.save_pretrained(tmp_path / "peft")
    theirs = logits(pm, ids)
    _moved(theirs, logits(base, ids), name)
    a = copy.deepcopy(base)
    cfg = ll.from_peft(a, tmp_path / "peft")
    assert cfg.variant == name and all(getattr(cfg, k) == v for k, v in expect.items()), (cfg, expect)
    d = (logits(a, ids) - theirs).abs().max().item()
    print(f"{name} {kw} PEFT -> from_peft max|diff| {d:.2e}")
    assert d <= 1e-5, d
    ll.to_peft(a, tmp_path / "again")
    b = copy.deepcopy(base); ll.from_peft(b, tmp_path / "again")
    _assert_same_adapter(a, b, ids)


@pytest.mark.parametrize("name", IMPORTERS)
def test_trainable_count_equals_peft_on_its_export(name, tmp_path):
    "PEFT loads our `example`'s export (trainable) with as many trainable numbers as ours has."
    V, m = ll.VARIANTS[name], tiny_qwen3()
    ll.attach(m, ll.get_config(name, **V.example))
    ll.to_peft(m, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(tiny_qwen3(), tmp_path / "p", is_trainable=True)
    count = lambda model: sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count(m) == count(pm) > 0


def _qwen06b_block(meta=True):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab; on the meta device unless W is read."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("meta" if meta else "cpu"): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("name,ours,theirs,expected", [pytest.param(*c, id=f"{c[0]}-{i}") for i, c in enumerate(COUNTS)])
def test_trainable_count_equals_peft(name, ours, theirs, expected):
    V = ll.VARIANTS[name]
    meta = not (V.needs_calibration or name in ("pissa", "shira"))     # an SVD, calibration or PEFT's SHiRA mask need real weights
    m = _qwen06b_block(meta)
    ll.attach(m, ll.get_config(name, **ours), calibration_data=token_batches(n=2, bs=4, T=16, vocab=32) if V.needs_calibration else None)
    n_ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    ptype = V.peft_type or "LORA"                                      # PiSSA / EVA: a LoRA of the same shapes
    pm = peft.get_peft_model(_qwen06b_block(meta), PEFT_TYPE_TO_CONFIG_MAPPING[ptype](**{"target_modules": QV, **theirs}))
    n_peft = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"{name} {ours} trainable params on one Qwen3-0.6B block: ours {n_ours:,} PEFT {n_peft:,}")
    assert n_ours == n_peft == expected


@pytest.mark.parametrize("name,kw,field", [pytest.param(n, kw, f, id=f"{n}-{i}") for n, rows in BAD.items() for i, (kw, f) in enumerate(rows)])
def test_bad_config_values_name_the_field(name, kw, field):
    with pytest.raises(ValueError, match=field): ll.get_config(name, **kw)
