"""The README's Python snippets run as written, in order, in one namespace (as a reader pastes them into one
session), in a folder where the files they name exist: a run at runs/my-run made by ``resnets train``, and
torchvision's resnet18 file in a torchvision cache of the test's own (random weights; nothing is downloaded)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from resnets.cli import main
from tests.data.formats import write_image_tree

README = Path(__file__).parent.parent / "README.md"
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def snippets(text: str) -> list[str]:
    """Every ```python block, dedented by its fence's indent (blocks inside list items are indented)."""
    return [textwrap.dedent(body) for _, body in FENCE.findall(text)]


#: What a command needs beyond the venv of the README's first command (scripts/setup.sh installs no extras), and
#: the extra each such line must name.
EXTRAS = {"onnx": "'.[onnx]'", "--tensorboard": "'.[tensorboard]'"}


def test_commands_that_need_an_extra_name_it() -> None:
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    needing = 0
    for line in (line for block in blocks for line in block.splitlines() if line.startswith("resnets ")):
        command = line.split("#")[0]
        for word, extra in EXTRAS.items():
            if word in command:
                needing += 1
                assert extra in line, f"README: {line!r} needs {extra} and does not say so"
    assert needing >= 3  # export --format onnx, predict FILE.onnx, train --tensorboard


def test_the_snippets_are_found() -> None:
    found = snippets(README.read_text())
    assert len(found) >= 5 and all(code.strip() for code in found)
    assert any("resnets.runs.open_run(" in code for code in found)  # the call that was an AttributeError


@pytest.mark.slow
def test_the_readme_python_snippets_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch/hub/checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), "torch/hub/checkpoints/resnet18-f37072fd.pth")
    write_image_tree(Path("tree/train"), {"ant": 6, "bee": 6}, size=(8, 8), seed=0)
    write_image_tree(Path("tree/test"), {"ant": 2, "bee": 2}, size=(8, 8), seed=1)
    argv = ["train", "--model", "resnet20", "--data", "tree", "--max-steps", "2", "-b", "4", "--out", "runs/my-run"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    namespace: dict = {"__name__": "readme"}
    for number, code in enumerate(snippets(README.read_text()), 1):
        try:
            exec(compile(code, f"README.md python snippet {number}", "exec"), namespace)  # noqa: S102 - the point
        except Exception as error:  # noqa: BLE001 - name the snippet that failed
            pytest.fail(f"README python snippet {number} failed: {type(error).__name__}: {error}\n{code}")
    assert namespace["run"].checkpoint.name == "last.safetensors"
    assert namespace["tuned"].fc.out_features == 10
    assert (tmp_path / "studies/signal.json").is_file()
