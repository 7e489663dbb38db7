"""The README's scaling-out, resume and troubleshooting commands are valid as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fer_lightning.cli_checks import ConfigError, check_argv

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Scaling out", "Interrupted runs and exact resume", "Determinism", "Troubleshooting")
APPS = {"fer_lightning": "train", "fer_lightning.evaluate": "eval"}


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for title in SECTIONS:
        for block in re.findall(r"```bash\n(.*?)```", _section(text, title), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("python ") and "<" not in line:  # placeholders (<run>) are not runnable
                    commands.append(line)
    return commands


COMMANDS = _commands()


def test_the_sections_exist_and_hold_commands() -> None:
    assert len(COMMANDS) >= 15
    assert any("trainer=ddp_cpu" in c for c in COMMANDS) and any("+launcher=slurm" in c for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.split()[1:3][0] == "-m"], ids=lambda c: c[:80])
def test_each_training_or_evaluation_command_composes(command: str) -> None:
    argv = shlex.split(command)
    app = APPS.get(argv[2])
    if app is None:
        pytest.skip(f"not a Hydra app: {argv[2]}")
    if "+experiment=resnt" in argv or "trainer.max_epoch=3" in argv:  # the README's deliberate typos
        with pytest.raises(ConfigError, match="Did you mean"):
            check_argv(app, argv[3:])
        return
    check_argv(app, argv[3:])  # raises ConfigError on an unknown group option or key


def test_the_checkpoint_inspection_command_runs() -> None:
    (command,) = [c for c in COMMANDS if c.startswith("python -c")]
    result = subprocess.run(shlex.split(command.replace("python", sys.executable, 1)), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "compact_cnn" in result.stdout
