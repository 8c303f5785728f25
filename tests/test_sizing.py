"""Sizing: parameter counts against the published totals, memory, FLOPs and budgets."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

import dlbook as dl
from dlbook import sizing
from dlbook.plotting import plot_log_bars

# Totals of the released checkpoints (Hugging Face's gpt2, gpt2-medium and bert-base-uncased
# count exactly these; BERT's includes its pooler). The GPT-2 paper printed 117M and 345M.
KNOWN_PARAMS = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168, "bert-base": 109_482_240}


@pytest.mark.parametrize("key", sorted(KNOWN_PARAMS))
def test_meta_models_have_the_published_parameter_counts(key):
    model = sizing.build_transformer(sizing.SPECS[key])
    assert all(p.is_meta for p in model.parameters())  # no storage was allocated
    assert dl.count_parameters(model) == KNOWN_PARAMS[key]


@pytest.mark.parametrize("key", sorted(KNOWN_PARAMS))
def test_closed_form_is_within_two_percent(key):
    estimate = sizing.closed_form_params(sizing.SPECS[key])
    assert estimate < KNOWN_PARAMS[key]  # it leaves out biases, norms and positions
    assert abs(estimate / KNOWN_PARAMS[key] - 1) < 0.02


def test_bert_without_pooler_and_gpt2_without_tying():
    bert = sizing.build_transformer(dataclasses.replace(sizing.BERT_BASE, pooler=False))
    assert dl.count_parameters(bert) == KNOWN_PARAMS["bert-base"] - (768 * 768 + 768)
    gpt2 = sizing.build_transformer(sizing.GPT2_SMALL)
    assert gpt2.wte.weight.shape == (50_257, 768)  # shared with the output layer, counted once


def test_meta_forward_gives_shapes_without_compute():
    gpt2 = sizing.build_transformer(sizing.GPT2_SMALL)
    logits = gpt2(torch.zeros(2, 16, dtype=torch.long, device="meta"))
    assert logits.is_meta and logits.shape == (2, 16, 50_257)
    bert = sizing.build_transformer(sizing.BERT_BASE)
    assert bert(torch.zeros(2, 16, dtype=torch.long, device="meta")).shape == (2, 768)


def test_tiny_transformer_runs_on_cpu_and_matches_its_closed_form_breakdown():
    spec = sizing.TransformerSpec(
        "tiny", num_layers=2, d_model=16, num_heads=4, vocab_size=50, context=8
    )
    model = sizing.build_transformer(spec, device="cpu")
    logits = model(torch.randint(0, 50, (3, 8)))  # (B, T, V)
    assert logits.shape == (3, 8, 50) and torch.isfinite(logits).all()
    d, L = 16, 2
    exact = L * (12 * d * d + 13 * d) + 50 * d + 8 * d + 2 * d  # blocks, wte, wpe, final norm
    assert dl.count_parameters(model) == exact


def test_causal_mask_hides_the_future():
    spec = sizing.TransformerSpec("tiny", 1, 16, 4, 50, 8)
    torch.manual_seed(0)
    model = sizing.build_transformer(spec, device="cpu").eval()
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50  # only the last token differs
    with torch.no_grad():
        assert torch.allclose(model(ids)[0, :-1], model(changed)[0, :-1], atol=1e-6)


def test_regimes_bytes_per_parameter():
    table = sizing.regimes_table()
    assert table.loc["fp32 training, Adam", "total"] == 16
    assert table.loc["mixed precision (bf16) training, Adam", "total"] == 16  # ZeRO, sec. 3.1
    assert table.loc["fp32 training, SGD with momentum", "total"] == 12
    assert table.loc["int8 inference", "total"] == 1


def test_format_bytes_and_memory_table():
    assert sizing.format_bytes(999) == "999 B"
    assert sizing.format_bytes(1_640_000) == "1.6 MB"
    assert sizing.format_bytes(1.99e9) == "2.0 GB"
    table = sizing.memory_table({"gpt2": 124_439_808})
    assert table.loc["gpt2", "fp32 training, Adam"] == "2.0 GB"
    assert table.loc["gpt2", "int8 inference"] == "124.4 MB"


def test_six_n_d_matches_counted_flops_of_a_wide_linear_layer():
    model = torch.nn.Linear(64, 64, bias=False, device="meta")
    X = torch.empty(32, 64, device="meta", requires_grad=True)  # input gradient needed too
    counted = sizing.count_training_flops(model, X)
    assert counted == sizing.training_flops(64 * 64, 32)  # 2N forward + 4N backward, exactly


def test_cnn_counted_flops_far_exceed_six_n():
    with torch.device("meta"):
        cnn = dl.build_model("cnn")
    counted = sizing.count_training_flops(cnn, torch.empty(10, 1, 28, 28, device="meta"))
    assert counted / sizing.training_flops(dl.count_parameters(cnn), 10) > 5  # weight sharing


def test_gpu_hours_and_max_params():
    assert sizing.gpu_hours(sizing.H100.peak_flops * 3600, sizing.H100, 1.0) == pytest.approx(1)
    assert sizing.gpu_hours(sizing.H100.peak_flops * 3600, sizing.H100, 0.5) == pytest.approx(2)
    with pytest.raises(ValueError, match="utilization"):
        sizing.gpu_hours(1.0, sizing.H100, 1.5)
    adam = sizing.REGIMES[0]
    assert sizing.max_trainable_params(sizing.H100, adam) == pytest.approx(5e9)


def test_bert_pretraining_tokens():
    assert sizing.bert_pretraining_tokens() == pytest.approx(256 * 1e6 * (0.9 * 128 + 0.1 * 512))


def test_plot_log_bars():
    ax = plot_log_bars({"a": 1e2, "b": 1e8}, "parameters")
    assert ax.get_xscale() == "log" and len(ax.patches) == 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a"]  # first item on top
    plt.close(ax.figure)


@pytest.mark.parametrize("key", sorted(KNOWN_PARAMS))
def test_parameter_breakdown_adds_up_and_matches_the_block_formulas(key):
    spec = sizing.SPECS[key]
    breakdown = sizing.parameter_breakdown(sizing.build_transformer(spec))
    L, d = spec.num_layers, spec.d_model
    assert breakdown.sum() == KNOWN_PARAMS[key]
    assert breakdown["blocks: attention"] == L * (4 * d * d + 4 * d)  # Q, K, V, output
    assert breakdown["blocks: MLP"] == L * (8 * d * d + 5 * d)  # d -> 4d -> d
    assert breakdown["blocks: LayerNorms"] == L * 4 * d
    assert breakdown["position embedding"] == spec.context * d
    assert list(breakdown) == sorted(breakdown, reverse=True)  # largest first
    token = "token embedding" + (" (tied output layer)" if spec.causal else "")
    assert breakdown[token] == spec.vocab_size * d
