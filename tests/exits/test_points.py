"""Exit points: discovery, naming, validation, take_indices."""
import pytest
import timm
import torch

from exits import ExitPoint, attach_exits, take_indices
from exits.errors import ExitsError, UnknownModuleError
from exits.points import check_points, resolve_point_names
from exits.segments import plan_for

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()


def test_stage_points_match_feature_info(resnet):
    model = attach_exits(resnet, points="stages", input_size=(3, 64, 64))
    info = resnet.feature_info[1:]  # the stem is not a position
    assert [p.module for p in model.exit_points] == [f["module"] for f in info]
    assert [p.num_chs for p in model.exit_points] == [f["num_chs"] for f in info]
    assert [p.reduction for p in model.exit_points] == [f["reduction"] for f in info]
    assert [p.position for p in model.exit_points] == [0, 1, 2, 3]


def test_user_points_in_execution_order_with_stage_names(resnet):
    model = attach_exits(resnet, points=["layer3", "layer1.0", "maxpool"], heads="linear", input_size=(3, 64, 64))
    assert [p.module for p in model.exit_points] == ["maxpool", "layer1.0", "layer3"]
    assert [e.name for e in model.exits] == ["maxpool/linear", "layer1.0/linear", "layer3/linear", "head"]
    assert [s.name for s in model.segments] == ["segment:maxpool", "segment:layer1.0", "segment:layer3",
                                                "segment:head"]


def test_unknown_and_non_boundary_modules_are_named(resnet):
    with pytest.raises(UnknownModuleError, match="has no module 'layer9'"):
        attach_exits(resnet, points=["layer9"], input_size=(3, 64, 64))
    with pytest.raises(UnknownModuleError, match="'layer1.0.conv1' .* not a block boundary"):
        attach_exits(resnet, points=["layer1.0.conv1"], input_size=(3, 64, 64))
    with pytest.raises(ExitsError, match="same position"):
        attach_exits(resnet, points=["layer1", "layer1.0"], input_size=(3, 64, 64))
    with pytest.raises(ExitsError, match="points='every'"):
        resolve_point_names(plan_for(resnet), "every")


def test_vit_token_points_and_swin_channels_last():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=3, num_classes=5)
    model = attach_exits(vit, points="stages", heads="token")
    assert model.input_size == (3, 32, 32)
    assert [(p.module, p.layout, p.num_chs, p.reduction, p.num_prefix_tokens) for p in model.exit_points] == [
        (f"blocks.{i}", "nlc", 192, 16, 1) for i in range(3)]
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=2,
                             embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), num_classes=5)
    model = attach_exits(swin, points="stages")
    assert [(p.module, p.layout, p.num_chs, p.reduction) for p in model.exit_points] == [
        ("layers.0", "nhwc", 16, 4), ("layers.1", "nhwc", 32, 8), ("layers.2", "nhwc", 64, 16),
        ("layers.3", "nhwc", 128, 32)]


def test_check_points_rejects_bad_lists():
    good = ExitPoint(0, "a", 8, 4, "nchw")
    with pytest.raises(ExitsError, match="num_chs"):
        check_points([ExitPoint(0, "a", 0, 4, "nchw")])
    with pytest.raises(ExitsError, match="layout"):
        check_points([ExitPoint(0, "a", 8, 4, "nhcw")])
    with pytest.raises(ExitsError, match="positions must increase"):
        check_points([good, ExitPoint(0, "b", 8, 8, "nchw")])
    with pytest.raises(ExitsError, match="reduction 2 is below"):
        check_points([good, ExitPoint(1, "b", 8, 2, "nchw")])
    check_points([good, ExitPoint(1, "b", 8, 0, "nc")])


def test_take_indices():
    assert take_indices(5) == [0, 1, 2, 3, 4]
    assert take_indices(5, 2) == [3, 4]
    assert take_indices(5, [0, -1]) == [0, 4]
    with pytest.raises(ExitsError, match="index 5 is out of range"):
        take_indices(5, [5])
    with pytest.raises(ExitsError, match="last 6"):
        take_indices(5, 6)
