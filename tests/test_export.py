"""Shipping weights: safetensors round trips through both loaders, ONNX parity, CLI errors."""

from __future__ import annotations

import pytest
import timm
import torch

from rhosearch.core.model import create_model
from rhosearch.core.space import RhoConfig, get_preset, parse_rho
from rhosearch.deploy.export import (
    _onnx_outputs,
    export_onnx,
    load_model,
    read_metadata,
    save_weights,
    size_multiple,
    timm_name,
    weights_resolution,
)
from rhosearch.errors import RhoSearchError


def _trained_like(config: RhoConfig, num_classes: int = 10) -> torch.nn.Module:
    """A model whose BN statistics are not the defaults, so a lost buffer would show."""
    torch.manual_seed(0)
    model = create_model(config, num_classes=num_classes)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 32, 32))
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, resolution: int = 32) -> float:
    images = torch.rand(2, 3, resolution, resolution)
    with torch.no_grad():
        return float((a.eval()(images) - b.eval()(images)).abs().max())


def test_project_loader_round_trip_from_metadata_alone(tmp_path):
    config = parse_rho("1/3,1/4,3", backbone="mobilevit_xxs")
    model = _trained_like(config)
    path = save_weights(model, tmp_path / "m.safetensors", extra={"top1": 91.5})
    metadata = read_metadata(path)
    assert metadata["backbone"] == "mobilevit_xxs" and metadata["rho"] == "0,0,1/3,1/4,3"
    assert metadata["num_classes"] == "10" and metadata["top1"] == "91.5"
    assert "timm_name" not in metadata  # not a registered preset
    loaded = load_model(path)
    assert loaded.config == config and not loaded.training
    assert _same_outputs(model, loaded) == 0.0


def test_timm_loader_round_trip_for_a_registered_preset(tmp_path):
    config = get_preset("exmvit-928").config
    model = _trained_like(config)
    path = save_weights(model, tmp_path / "m.safetensors")
    name = read_metadata(path)["timm_name"]
    assert name == timm_name(config) == "exmobilevit_s_928"
    loaded = timm.create_model(name, pretrained=True, num_classes=10,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    assert _same_outputs(model, loaded) == 0.0
    assert _same_outputs(model, load_model(path)) == 0.0


def test_foreign_or_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(RhoSearchError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RhoSearchError, match="not a safetensors"):
        load_model(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / "bare.safetensors")
    with pytest.raises(RhoSearchError, match="metadata"):
        load_model(tmp_path / "bare.safetensors")


@pytest.mark.parametrize("backbone", ["mobilevit_xxs", "mobilevit_s"])
def test_static_size_onnx_export_matches_pytorch(tmp_path, backbone):
    model = _trained_like(parse_rho("1/3,1/4,3", backbone=backbone))
    exported = export_onnx(model, tmp_path / "m.onnx", resolution=32, batch_size=3,
                           dynamic_size=False)
    assert exported.path.is_file() and exported.input_shape == (3, 3, 32, 32)
    assert exported.exporter == "torchscript" and exported.max_abs_diff <= 1e-4


def test_onnx_mismatch_is_an_error_and_removes_the_file(tmp_path):
    model = _trained_like(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"))
    with pytest.raises(RhoSearchError, match="differs from PyTorch"):
        export_onnx(model, tmp_path / "m.onnx", resolution=32, atol=-1.0, dynamic_size=False)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("rho, multiple", [("1/3,1/4,3", 64), ("0,0,1,1,0", 32),
                                           ("0,0,1,0,0", 16), ("1,1,0,0,0", 1)])
def test_size_multiple_follows_the_deepest_mobilevit_block(rho, multiple):
    assert size_multiple(parse_rho(rho)) == multiple


def test_dynamic_size_needs_a_size_the_graph_can_serve(tmp_path):
    model = _trained_like(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"))
    with pytest.raises(RhoSearchError, match="multiple of 64.*--static-size"):
        export_onnx(model, tmp_path / "m.onnx", resolution=96)
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_follows_the_weights_and_takes_any_batch_and_size(tmp_path, capsys):
    resolution = 64  # exported at the metadata's size, then served at others (256: the paper's)
    from rhosearch.cli import main

    model = _trained_like(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"))
    weights = save_weights(model, tmp_path / "m.safetensors", extra={"resolution": resolution})
    assert weights_resolution(weights) == resolution
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{resolution} px from the weights' metadata" in printed and "max abs diff" in printed
    for batch, size in ((1, 64), (4, 64), (2, 128), (1, 256)):
        images = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            expected = model(images)
        assert float((_onnx_outputs(out, images) - expected).abs().max()) <= 1e-4


def test_cli_export_static_size_and_one_line_errors(tmp_path, capsys):
    from rhosearch.cli import main

    model = _trained_like(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"))
    weights = save_weights(model, tmp_path / "m.safetensors")  # no resolution in its metadata
    assert weights_resolution(weights) is None
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out),
                 "--resolution", "32", "--static-size"]) == 0
    printed = capsys.readouterr().out
    assert "batch x 3 x 32 x 32" in printed and "from --resolution" in printed and out.is_file()
    assert main(["export", "--weights", str(tmp_path / "x"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line
    assert main(["export", "--weights", str(weights), "--out", str(out),
                 "--resolution", "96"]) == 2
    assert "--static-size" in capsys.readouterr().err


def test_a_dynamic_export_leaves_only_its_file(tmp_path):
    """The dynamo exporter writes large weights to `.NAME.onnx.tmp.data` beside the scratch
    graph; the finished export holds them itself and nothing else stays behind."""
    model = create_model(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"), num_classes=10)
    exported = export_onnx(model.eval(), tmp_path / "m.onnx", resolution=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert float((_onnx_outputs(exported.path, images) - model(images)).abs().max()) <= 1e-4


def test_export_without_the_extra_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from rhosearch.cli import main

    weights = save_weights(create_model(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"),
                                        num_classes=10), tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: import fails
    assert main(["export", "--weights", str(weights), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'rhosearch[export]'" in err[0], err
    assert not (tmp_path / "m.onnx").exists()
