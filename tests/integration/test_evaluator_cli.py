"""`attractor evaluator` end to end: a small factorial on a quickly trained generator,
reopened with the same numbers, and bad input as one line with exit 2 and nothing written.
"""

from __future__ import annotations

import html
import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import assert_user_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


PIXELS = [f"p{i}" for i in range(64)]

BAD = [
    ("[trainer]\nlr = 1\n", "no [evaluator] table"),
    ("[evaluator]\npreferred = [11]\n", "preferred"),
    ("[evaluator]\npreferred = [3]\ncolour = 1\n", "colour"),
    ("[evaluator]\n[evaluator.trainer]\nkeep = 80\nsamples = 8\n", "keep (80) is more than"),
    ("[evaluator]\nresamples = 1\n", "resamples"),
    ("[evaluator]\n[evaluator.structural]\nlabel_noise = [0.7]\n", "label_noise 0.7"),
    ("[evaluator]\nexamples_file = 'nowhere.csv'\n", "nowhere.csv"),
    ("[evaluator]\n[gpu]\nx = 1\n", "unknown table [gpu]"),
    ("[evaluator\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_config_is_one_line_and_writes_nothing(
    cli, tmp_path: Path, text: str, fragment: str
) -> None:
    config = _toml(tmp_path / "bad.toml", text)
    out = tmp_path / "out"
    assert_user_error(cli("evaluator", config, "--out", out), fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    ("header", "rows", "fragment"),
    [
        (PIXELS, [[0] * 64], "label"),  # no label column
        (["label", *PIXELS], [[0, *[0] * 64], [0, *[1] * 64]], "no preferred"),
        (["label", *PIXELS[:10]], [[1, *[0] * 10]], "p10"),
    ],
)
def test_a_bad_examples_file_is_one_line(
    cli, tmp_path: Path, header: list[str], rows: list[list[object]], fragment: str
) -> None:
    examples = _csv(tmp_path / "human.csv", header, rows)
    config = _toml(tmp_path / "c.toml", f"[evaluator]\nexamples_file = '{examples}'\n")
    out = tmp_path / "out"
    assert_user_error(cli("evaluator", config, "--out", out), fragment)
    assert not out.exists()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A denoise-digits generator good enough to draw digits (~7 s on one thread)."""
    from attractor.config import parse_config
    from attractor.runs.launch import train

    root = tmp_path_factory.mktemp("evaluator") / "base"
    train(
        parse_config(
            {
                "task": {"name": "denoise-digits"},
                "trainer": {"optimizer": "adam", "lr": 5e-3, "steps": 600, "batch_size": 256},
                "plan": {"members": 1, "vary": ["init_seed"]},
            }
        ),
        root,
    )
    return root


def test_a_small_factorial_end_to_end_and_reopened(cli, tmp_path: Path, base: Path) -> None:
    config = _toml(
        tmp_path / "e.toml",
        f"""
        [evaluator]
        preferred = [0]
        model = "{base}:0"
        examples = 30
        resamples = 3
        evaluator_seeds = 2
        trainer_seeds = 2
        label_noise = 0.1
        eval_samples = 32
        draws = 100
        suggest = 4
        [evaluator.reward_model]
        steps = 100
        [evaluator.trainer]
        rounds = 2
        samples = 64
        keep = 16
        steps = 20
        [evaluator.structural]
        hidden = [0]
        resamples = 2
        """,
    )
    shown = cli("evaluator", config, "--out", tmp_path / "out", "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    members = data["members"]
    assert len(members) == 12 and {m["resample"] for m in members} == {0, 1, 2}
    assert {m["trainer_seed"] for m in members} == {0, 1}
    summary = data["summary"]
    assert set(summary["sources"]) == {"resample", "evaluator_seed", "trainer_seed"}
    assert [r["round"] for r in data["rounds"]] == [0, 1, 2]
    assert 0 <= summary["true_final"]["true_low"] <= summary["true_final"]["true_high"] <= 1
    assert 0.5 < summary["evaluators"]["accuracy"] <= 1 and summary["evaluators"]["evaluators"] == 6
    assert [row["level"] for row in data["structural"]] == [0.0]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("Learned evaluator (trainer2)") == 1 and "label these next" in page
    again = cli("evaluator", config, "--out", tmp_path / "out", "--json")
    assert again.code == 0 and json.loads(again.out)["summary"] == summary


def test_the_text_setting_end_to_end(cli, tmp_path: Path) -> None:
    """A tiny tiny-lm base, two resamples x two trainer seeds: the pipeline runs, the report
    shows texts, and a digits-only option is refused for text in one line.
    """
    pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    from attractor.config import parse_config
    from attractor.runs.launch import train

    base = tmp_path / "lm"
    train(
        parse_config(
            {
                "task": {
                    "name": "tiny-lm",
                    "layers": 1,
                    "width": 32,
                    "heads": 4,
                    "context": 64,
                    "windows_per_document": 2,
                },
                "trainer": {"optimizer": "adam", "lr": 3e-3, "batch_size": 16, "steps": 40},
                "plan": {"members": 1, "vary": ["init_seed"]},
            }
        ),
        base,
    )
    common = f"""
        [evaluator]
        setting = "text"
        rule = "code"
        model = "{base}:0"
        examples = 30
        resamples = 2
        evaluator_seeds = 1
        trainer_seeds = 2
        eval_samples = 16
        draws = 100
        suggest = 2
        [evaluator.reward_model]
        steps = 30
        [evaluator.trainer]
        rounds = 1
        samples = 16
        keep = 4
        steps = 3
        length = 24
        """
    config = _toml(tmp_path / "t.toml", common)
    shown = cli("evaluator", config, "--out", tmp_path / "out", "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["setting"] == "text" and data["preferred"] == "code"
    assert len(data["members"]) == 4 and [r["round"] for r in data["rounds"]] == [0, 1]
    spread = {row["measure"]: row for row in data["spread"]}
    js = spread["next-token JS on held-out text (mean pairwise)"]
    assert 0 < js["value"] < 0.7 and js["low"] <= js["value"] <= js["high"]
    assert data["summary"]["basins"] == {"basin": None}
    page = html.unescape((tmp_path / "out" / "report.html").read_text())
    assert "texts by the rule 'code'" in page and "the final models' samples" in page
    assert "basin(s)" not in page  # no classes, no basins
    wrong = _toml(tmp_path / "w.toml", common + "sampler_steps = 4\n")
    assert_user_error(
        cli("evaluator", wrong, "--out", tmp_path / "w"), "not an option of the text setting"
    )


def test_settings_that_cannot_run_together_leave_the_out_directory_alone(
    cli, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    config = _toml(tmp_path / "k.toml", "[evaluator]\n[evaluator.trainer]\nkeep = 9\nsamples = 4\n")
    assert_user_error(cli("evaluator", config, "--out", out), "keep (9) is more than")
    assert out.is_dir() and not any(out.iterdir())  # checked before OUT is touched
