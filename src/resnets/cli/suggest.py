"""Unknown commands and flags answered with the command's own usage and what the user most likely meant.

argparse alone reports a subcommand's unknown flag with the top-level usage and no hint. Here the command that
was given prints its usage, and each unknown flag gets a suggestion: the same flag with dashes for underscores
(``--max_steps``), the flag that does what another tool's flag of that name does (Lightning's ``--max-epochs``
and ``--precision``, Hugging Face's ``--output_dir``), or the closest of the command's flags (``--modle``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from resnets.errors import closest

#: Flags of Lightning, Hugging Face's Trainer and timm's train.py, and the flag of ours that does that job.
OTHER_TOOLS = {
    "--max-epochs": "--epochs",
    "--num-epochs": "--epochs",
    "--num-train-epochs": "--epochs",
    "--precision": "--amp",  # Lightning's precision="bf16-mixed": --amp, or --no-amp for fp32
    "--accelerator": "--device",
    "--devices": "--device",
    "--gpus": "--device",
    "--learning-rate": "--lr",
    "--output-dir": "--out",
    "--resume-from-checkpoint": "--resume",
    "--initial-checkpoint": "--weights",
    "--per-device-train-batch-size": "--batch-size",
    "--workers": "--threads",
}


def parse_arguments(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(words)``, but an unknown command or flag exits through the command's own usage with a
    suggestion (status 2, as argparse's own errors)."""
    commands = _commands(parser)
    if words and not words[0].startswith("-") and words[0] not in commands.choices:
        guesses = closest(words[0], commands.choices)
        hint = (
            f"; did you mean {' or '.join(guesses)}?" if guesses else f"; the commands: {', '.join(commands.choices)}"
        )
        parser.error(f"unknown command {words[0]!r}{hint}")
    args, extras = parser.parse_known_args(words)
    refuse_unknown(commands.choices[args.command], extras)
    return args


def refuse_unknown(command: argparse.ArgumentParser, extras: Sequence[str]) -> None:
    """Exit through ``command``'s usage when ``extras`` (what ``parse_known_args`` left) holds anything."""
    if extras:
        command.error(f"unrecognized arguments: {' '.join(extras)}{_hints(command, extras)}")


def _commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _hints(command: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``; did you mean --model?`` for the unknown flags among ``extras`` (the values after them are left out)."""
    flags = [name for action in command._actions for name in action.option_strings if name.startswith("--")]
    unknown = [word.partition("=")[0] for word in extras if word.startswith("--")]
    hints = []
    for given in unknown:
        guess = suggest(given, flags)
        if guess:
            hints.append(guess + (f" (for {given})" if len(unknown) > 1 else ""))
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def suggest(flag: str, flags: Sequence[str]) -> str:
    """The flag of ``flags`` that ``flag`` most likely meant; empty when none is close."""
    dashed = flag.replace("_", "-")
    if dashed in flags:
        return dashed
    other = OTHER_TOOLS.get(dashed)
    if other in flags:
        return f"{other}/--no-amp" if other == "--amp" and "--no-amp" in flags else other
    return next(iter(closest(dashed, [f for f in flags if not f.startswith("--no-")], n=1)), "")
