"""The README's scaling-out, resume and troubleshooting commands are valid as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fer_lightning.cli_checks import ConfigError, check_argv

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Experiments", "Scaling out", "Interrupted runs and exact resume", "Determinism", "Troubleshooting",
            "Accuracy beyond FER2013: cross-dataset tests, robust training, distillation")
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


# --- The shipped model's accuracy, as the README quotes it --------------------------------------------------

CARD_JSON = ROOT / "fer_lightning" / "assets" / "fer2013_compact_cnn.json"  # what MODEL_CARD.md is rendered from
SPLITS = ("PublicTest", "PrivateTest")
_PERCENT = r"\**(?P<value>\d{1,3}(?:\.\d+)?)\s*%\**"
# "68.18% PrivateTest", "68.18% on PrivateTest", "PrivateTest 68.18%", "PrivateTest accuracy of 68.18%"
_PROSE_CLAIMS = (
    re.compile(_PERCENT + r"\s*(?:accuracy\s+)?(?:on\s+)?(?:the\s+)?(?P<split>PublicTest|PrivateTest)"),
    re.compile(r"(?P<split>PublicTest|PrivateTest)(?:\s+accuracy)?(?:\s+(?:of|is|was))?\s*:?\s*" + _PERCENT),
)
_SHIPPED = re.compile(r"shipped|ships inside|MODEL_CARD\.md|model inside the package", re.I)


@dataclass(frozen=True)
class Claim:
    line: int  # 1-based line of README.md
    split: str
    value: str  # as written, e.g. "68.2" (its decimals say how it was rounded)
    in_table: bool


def card_accuracy() -> dict[str, float]:
    """The shipped checkpoint's accuracy in percent per split, from the record the model card is generated from."""
    evaluation = json.loads(CARD_JSON.read_text())["evaluation"]["ckpt"]
    return {split: 100 * evaluation[split]["acc"] for split in SPLITS}


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _table_claims(rows: list[tuple[int, str]], about_shipped: bool) -> list[Claim]:
    """Accuracy cells of the rows that describe the shipped model as it ships (no test-time augmentation).

    A row is about it when its first cell says "shipped", or, in a table introduced as the shipped model's, in every
    row (only the `none` row where the first column is the TTA mode). Columns: PublicTest/PrivateTest accuracy, not
    macro-F1; a "PrivateTest (none / flip)" column holds several values, of which the `none` one counts.
    """
    header = _cells(rows[0][1])
    claims = []
    for number, row in rows[2:]:
        cells = _cells(row)
        shipped_row = "shipped" in cells[0].lower()
        if not shipped_row and not (about_shipped and (header[0].lower() != "tta" or cells[0] == "none")):
            continue
        for title, cell in zip(header, cells):
            split = next((s for s in SPLITS if s in title), None)
            if split is None or "f1" in title.lower() or "%" not in cell:
                continue
            modes = re.search(r"\(([^)]*/[^)]*)\)", title)  # e.g. "(none / flip)": the value for `none`
            values = [v.strip() for v in cell.split("/")] if modes else [cell]
            index = [m.strip() for m in modes.group(1).split("/")].index("none") if modes else 0
            found = re.search(_PERCENT, values[index])
            if found:
                claims.append(Claim(number, split, found.group("value"), in_table=True))
    return claims


def shipped_model_claims(text: str) -> list[Claim]:
    """Every PublicTest/PrivateTest accuracy the README attributes to the shipped model, in prose and in tables."""
    claims: list[Claim] = []
    blocks: list[list[tuple[int, str]]] = [[]]  # paragraphs and tables, split at blank lines, without code blocks
    in_code = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            blocks.append([])
        elif in_code or not line.strip():
            blocks.append([])
        else:
            blocks[-1].append((number, line))
    previous_prose = ""
    for block in filter(None, blocks):
        if block[0][1].lstrip().startswith("|") and len(block) > 2:
            claims += _table_claims(block, about_shipped=bool(_SHIPPED.search(previous_prose)))
            continue
        prose = " ".join(line for _, line in block)
        previous_prose = prose
        if _SHIPPED.search(prose):
            for pattern in _PROSE_CLAIMS:
                for match in pattern.finditer(prose):
                    number = next((n for n, line in block if match.group(0) in line), block[0][0])
                    claims.append(Claim(number, match.group("split"), match.group("value"), in_table=False))
    return claims


def _agrees(claim: Claim, accuracy: dict[str, float]) -> bool:
    decimals = len(claim.value.partition(".")[2])
    return f"{accuracy[claim.split]:.{decimals}f}" == claim.value


def test_the_model_card_shows_its_record() -> None:
    card = (ROOT / "fer_lightning" / "assets" / "MODEL_CARD.md").read_text()
    for split, value in card_accuracy().items():
        assert re.search(rf"^\| {split} \([a-z]+\) \| \**{value:.2f}%\**", card, flags=re.M), split


def test_the_readme_quotes_the_shipped_models_accuracy_from_its_card() -> None:
    accuracy = card_accuracy()
    claims = shipped_model_claims((ROOT / "README.md").read_text())
    # Not vacuous: the prose (the emotion finder's introduction) and the tables quote it, for both splits.
    assert any(not c.in_table for c in claims) and any(c.in_table for c in claims), claims
    assert {c.split for c in claims} == set(SPLITS), claims
    wrong = [f"README.md:{c.line}: {c.value}% {c.split}, the card says {accuracy[c.split]:.2f}%"
             for c in claims if not _agrees(c, accuracy)]
    assert not wrong, "\n".join(wrong)


def test_each_quoted_accuracy_that_goes_wrong_is_caught() -> None:
    """Each quote made 2.9 points too low in turn, and only that one, fails: the intro's 68.18% becomes the 65.28%
    it once said (and the card never did)."""
    text = (ROOT / "README.md").read_text()
    accuracy = card_accuracy()
    claims = shipped_model_claims(text)
    assert len(claims) >= 3, claims
    for claim in claims:
        lines = text.splitlines(keepends=True)
        quoted = claim.value + "%"
        assert lines[claim.line - 1].count(quoted) == 1, (claim, lines[claim.line - 1])
        wrong = f"{float(claim.value) - 2.9:.{len(claim.value.partition('.')[2])}f}"
        lines[claim.line - 1] = lines[claim.line - 1].replace(quoted, wrong + "%")
        bad = [c for c in shipped_model_claims("".join(lines)) if not _agrees(c, accuracy)]
        assert bad == [Claim(claim.line, claim.split, wrong, claim.in_table)], (claim, bad)
    assert any(c.split == "PrivateTest" and not c.in_table for c in claims), claims  # the intro, mutated to 65.28
