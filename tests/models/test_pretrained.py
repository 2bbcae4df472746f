"""``create_model(name, pretrained=True)`` and ``train --pretrained``: torchvision's and timm's local caches only.

Every test points TORCH_HOME and HF_HOME at its own folder and writes the files there itself, in the formats and
under the names torchvision and timm download them as (random weights, built from their model classes): nothing
is downloaded, here or by the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnets import create_model
from resnets.cli import main
from resnets.errors import CheckpointError
from resnets.io.pretrained import PUBLISHED, find_pretrained, hugging_face_cache, torchvision_cache

torchvision = pytest.importorskip("torchvision")


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty torchvision and Hugging Face caches of this test: (torchvision's checkpoints folder, the hub folder)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert torchvision_cache() == tmp_path / "torch/hub/checkpoints" and hugging_face_cache() == tmp_path / "hf/hub"
    return torchvision_cache(), hugging_face_cache()


def _torchvision_file(folder: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / name)
    return folder / name


def _timm_snapshot(hub: Path, repo: str, commit: str, state: dict[str, torch.Tensor] | None = None) -> Path:
    """hub/models--timm--REPO/snapshots/COMMIT/model.safetensors, as huggingface_hub lays a download out."""
    folder = hub / f"models--timm--{repo}" / "snapshots" / commit
    folder.mkdir(parents=True)
    save_file(state or {"x": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def test_without_a_cached_file_one_line_names_the_file_the_folders_and_weights(caches) -> None:
    folder, hub = caches
    with pytest.raises(CheckpointError) as error:
        create_model("resnet50", pretrained=True)
    message = str(error.value)
    assert "\n" not in message
    assert f"torchvision's resnet50-11ad3fa6.pth in {folder}" in message  # torchvision's default (V2) weights
    assert f"timm's model.safetensors in {hub}/models--timm--resnet50.a1_in1k/snapshots/*" in message
    assert message.endswith("or pass --weights FILE") and "never downloads" in message
    with pytest.raises(CheckpointError, match=r"no pretrained weights are published for 'resnet20' \(.*resnet18, "):
        create_model("resnet20", pretrained=True)


def test_a_torchvision_file_loads_whole_or_with_a_new_head(caches) -> None:
    folder, _ = caches
    reference = torchvision.models.resnet18(weights=None).eval()
    _torchvision_file(folder, "resnet18-f37072fd.pth", reference.state_dict())
    model = create_model("resnet18", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), reference(x))  # every tensor, the 1000-class head included
    torch.manual_seed(3)
    fresh = create_model("resnet18", num_classes=10)
    torch.manual_seed(3)
    tuned = create_model("resnet18", num_classes=10, pretrained=True)
    assert torch.equal(tuned.fc.weight, fresh.fc.weight)  # the head for 10 classes is the one built
    assert torch.equal(tuned.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_torchvisions_default_weights_come_first_then_the_older_ones(caches) -> None:
    folder, _ = caches
    folder.mkdir(parents=True)
    (folder / "resnet50-0676ba61.pth").write_bytes(b"")  # IMAGENET1K_V1 alone
    assert find_pretrained("resnet50") == (folder / "resnet50-0676ba61.pth", "torchvision's cache")
    (folder / "resnet50-11ad3fa6.pth").write_bytes(b"")  # and IMAGENET1K_V2, torchvision's DEFAULT
    assert find_pretrained("resnet50")[0] == folder / "resnet50-11ad3fa6.pth"


def test_timms_cache_holds_the_default_tag_first_and_the_snapshot_that_main_names(caches) -> None:
    _, hub = caches
    other_tag = _timm_snapshot(hub, "resnet50.tv_in1k", "c0ffee")
    assert find_pretrained("resnet50") == (other_tag, "timm's cache")  # any tag, when the default is missing
    _timm_snapshot(hub, "resnet50.a1_in1k", "aaaa")
    chosen = _timm_snapshot(hub, "resnet50.a1_in1k", "bbbb")
    (hub / "models--timm--resnet50.a1_in1k/refs").mkdir()
    (hub / "models--timm--resnet50.a1_in1k/refs/main").write_text("bbbb\n")
    assert find_pretrained("resnet50")[0] == chosen
    assert PUBLISHED["se_resnet50"].timm.startswith("seresnet50.")  # timm's name for our se_resnet50


def test_a_timm_safetensors_file_loads_into_the_model_and_its_features(caches) -> None:
    timm = pytest.importorskip("timm")
    _, hub = caches
    reference = timm.create_model("resnet50d", pretrained=False).eval()
    _timm_snapshot(hub, "resnet50d.ra2_in1k", "abc123", reference.state_dict())
    model = create_model("resnet50d", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    features = create_model("resnet50d", features_only=True, pretrained=True)
    assert set(features.state_dict()) == set(reference.state_dict()) - {"fc.weight", "fc.bias"}
    assert torch.equal(features.state_dict()["layer3.0.conv2.weight"], reference.state_dict()["layer3.0.conv2.weight"])


def test_torchvisions_densenet_file_loads_under_its_old_key_names(caches) -> None:
    folder, _ = caches
    reference = torchvision.models.densenet121(weights=None).eval()
    # torchvision's published densenet files name "norm1" "norm.1" (torchvision renames them when it loads them),
    # and were saved before BatchNorm counted its steps
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    _torchvision_file(folder, "densenet121-a639ec97.pth", old)
    model = create_model("densenet121", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_train_pretrained_says_where_the_weights_came_from(caches, tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.data.formats import write_image_tree

    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "resnets-cache"))
    data = tmp_path / "tree"
    write_image_tree(data / "train", {"ant": 8, "bee": 8}, size=(32, 32), seed=0)
    write_image_tree(data / "test", {"ant": 2, "bee": 2}, size=(32, 32), seed=1)
    argv = ["train", "--model", "resnet18", "--data", str(data), "--pretrained", "--max-steps", "1", "-b", "8"]
    argv += ["--device", "cpu", "--no-amp", "--log-every", "100"]
    assert main([*argv, "--out", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pretrained: no pretrained weights for 'resnet18'" in err
    assert "resnet18-f37072fd.pth" in err and not (tmp_path / "missing").exists()
    folder, _ = caches
    path = _torchvision_file(folder, "resnet18-f37072fd.pth", torchvision.models.resnet18(weights=None).state_dict())
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[1] == (
        f"weights   {path} (torchvision's cache): 120 tensors loaded; the classifier (fc) is new, for 2 classes, "
        "trained from scratch"
    )
    assert any(line.startswith("recipe    finetune: ") for line in lines)
