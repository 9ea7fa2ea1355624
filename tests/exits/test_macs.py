"""MACs per unit (MACs = FLOPs / 2), attention counted; measured latency."""
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from exits import attach_exits
from exits.macs import count_flops, count_macs, measure_latency, unit_macs

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def test_vit_attention_is_counted():
    torch.manual_seed(0)
    depth, dim, n_cls = 3, 192, 10
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=depth,
                            num_classes=n_cls).eval()
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        vit(x)
    n_tok = 1 + (64 // 16) ** 2
    attention = depth * 2 * n_tok * n_tok * dim  # q @ k^T and attn @ v, in MACs
    linear = 16 * 16 * 3 * dim * (n_tok - 1) + depth * 12 * n_tok * dim * dim + dim * n_cls
    total = count_macs(vit, (3, 64, 64))
    assert total == linear + attention
    assert total - plain.get_total_flops() / 2 == attention  # what the stock counter misses on CPU
    model = attach_exits(vit, points="blocks", heads="token")
    macs = unit_macs(model)
    per_block = 12 * n_tok * dim * dim + 2 * n_tok * n_tok * dim
    assert macs["segment:blocks.1"] == macs["segment:blocks.2"] == per_block
    assert sum(v for k, v in macs.items() if k.startswith("segment:")) == total


def test_unit_macs_per_sample_and_head_costs():
    torch.manual_seed(0)
    model = attach_exits("resnet10t", points="stages", heads=("linear", "mlp3_h500"), num_classes=7,
                         input_size=(3, 32, 32))
    macs = unit_macs(model)
    assert macs == unit_macs(model, batch_size=3)
    assert list(macs) == [u.name for u in model.units]
    segments = sum(v for k, v in macs.items() if k.startswith("segment:"))
    assert segments == count_macs(model.backbone, (3, 32, 32)) > 0
    for p in model.exit_points:
        assert macs[f"head:{p.module}/linear"] == p.num_chs * 7  # pooling is not counted
        assert macs[f"head:{p.module}/mlp3_h500"] == p.num_chs * 500 + 500 * 500 + 500 * 7
    flops, out = count_flops(model.backbone, torch.zeros(2, 3, 32, 32))
    assert flops == 2 * 2 * segments and out.shape == (2, 7)
    assert [u.macs for u in model.cache_units(macs)] == list(macs.values())


def test_measure_latency_every_unit():
    torch.manual_seed(0)
    model = attach_exits("resnet10t", points=["layer2"], heads="linear", num_classes=3, input_size=(3, 32, 32))
    model.train()
    lat = measure_latency(model, batch_size=2, device="cpu", warmup=1, repeats=2)
    assert list(lat) == [u.name for u in model.units] and all(v > 0 for v in lat.values())
    assert model.heads.training  # mode restored
