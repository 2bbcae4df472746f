"""What a user of timm, Lightning or Hugging Face types by habit: the command's own usage and what they most likely
meant, messages that name the flag they typed, and ``--threads`` on every command that computes."""

from __future__ import annotations

import pytest
import torch

from resnets.cli import build_parser, main
from resnets.cli.options import use_threads
from resnets.cli.study import instrument_parser
from resnets.errors import ConfigError


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """stderr of a command line that must exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (("train", "--modle", "resnet20"), "unrecognized arguments: --modle resnet20; did you mean --model?"),
        (("train", "--max-epochs", "3"), "did you mean --epochs?"),  # Lightning's
        (("train", "--precision", "bf16-mixed"), "did you mean --amp/--no-amp?"),  # Lightning's
        (("train", "--max_steps", "5"), "did you mean --max-steps?"),  # Hugging Face's spelling
        (("train", "--output_dir", "x"), "did you mean --out?"),
        (
            ("train", "--modle=resnet20", "--lrr", "3"),
            "did you mean --model (for --modle), --lr (for --lrr)?",
        ),
        (("eval", "run", "--threadz", "2"), "did you mean --threads?"),
    ],
)
def test_an_unknown_flag_prints_the_commands_usage_and_what_was_meant(capsys, argv, hint) -> None:
    lines = _refused(capsys, *argv)
    assert lines[0].startswith(f"usage: resnets {argv[0]} ")  # the command's usage, not the top level's
    assert lines[-1].startswith(f"resnets {argv[0]}: error: ") and lines[-1].endswith(hint)


def test_an_unknown_flag_without_a_likely_meaning_gets_no_guess(capsys) -> None:
    lines = _refused(capsys, "train", "--zzzz")
    assert lines[-1] == "resnets train: error: unrecognized arguments: --zzzz"


def test_an_unknown_command_is_answered_with_the_closest(capsys) -> None:
    assert (
        _refused(capsys, "trian", "--model", "resnet20")[-1]
        == "resnets: error: unknown command 'trian'; did you mean train?"
    )


def test_an_instruments_unknown_flag_prints_its_usage(capsys) -> None:
    lines = _refused(capsys, "study", "lesion", "--modle", "resnet20")
    assert lines[0].startswith("usage: resnets study lesion ")
    assert lines[-1].endswith("unrecognized arguments: --modle resnet20; did you mean --model?")


def test_a_misspelled_model_name_is_answered_with_the_closest_not_the_whole_list(capsys) -> None:
    assert main(["summary", "resnt50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "resnets summary: error: unknown model 'resnt50'; did you mean resnet50 or resnet50d or resnet56? "
        "`resnets models` lists them"
    )
    assert main(["summary", "vgg16"]) == 2  # nothing close: the list, as before
    assert "expected one of: densenet121, " in capsys.readouterr().err


def test_messages_name_the_flags_that_were_typed(tmp_path, capsys) -> None:
    assert main(["train", "--weight-decay", "-1", "--print-config"]) == 2
    assert (
        capsys.readouterr().err.strip() == "resnets train: error: --weight-decay must be a finite number >= 0, got -1.0"
    )
    assert main(["train", "--data", "cifar10", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--data-dir FOLDER (data_dir= in Python)" in err and "data_dir=<" not in err


@pytest.mark.parametrize("command", ["eval", "predict", "export", "bench", "train"])
def test_every_command_that_computes_takes_threads(command: str) -> None:
    extra = {"eval": ["run"], "predict": ["run", "x.png"], "export": ["run", "--format", "onnx"]}.get(command, [])
    args = build_parser().parse_args([command, *extra, "--threads", "1"])
    assert args.threads == 1
    assert vars(instrument_parser("lesion").parse_args(["--threads", "1"]))["threads"] == 1


def test_use_threads_sets_torch_and_refuses_what_the_machine_has_not(monkeypatch) -> None:
    before = torch.get_num_threads()
    try:
        use_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match=r"^--threads must be an integer in \[1, \d+\], got 0$"):
            use_threads(0)
    finally:
        torch.set_num_threads(before)
