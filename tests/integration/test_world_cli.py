"""`attractor world` end to end: the double well's known answer, a trained cartpole ensemble
from an existing run, and bad input as one line with exit 2 and nothing written.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import assert_user_error

pytestmark = pytest.mark.usefixtures("one_thread")


def _toml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_double_well_basin_share_is_the_share_of_starts_on_the_right(cli, tmp_path: Path) -> None:

    from attractor.seeds import torch_generator
    from attractor.world import get_world

    config = _toml(
        tmp_path / "w.toml",
        """
        [world]
        name = "double-well"
        states = 200
        scales = [1, 3]
        draws = 100
        growth_states = 4
        trajectories = 4
        [world.map]
        factors = ["x"]
        points = 11
        """,
    )
    shown = cli("world", config, "--out", tmp_path / "out", "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    scales = {row["scale"]: row for row in data["scales"]}
    world = get_world("double-well")
    for k, scale in enumerate(sorted(scales)):  # the states basin_vs_scale draws at each scale
        x0 = world.initial(200, scale, torch_generator("world-basin-scale", 0, k))
        assert scales[scale]["share"] == pytest.approx(float((x0 > 0).double().mean()))
    top = data["summary"]["lyapunov_top"]  # every start converges: log(1 - 2h) < 0
    assert top["high"] < 0
    assert (tmp_path / "out" / "report.html").read_text().count("World: double-well") == 1
    again = cli("world", config, "--out", tmp_path / "out", "--json")  # reopens the directory
    assert again.code == 0 and json.loads(again.out)["summary"] == data["summary"]


def test_cartpole_world_on_a_trained_run(cli, tmp_path: Path) -> None:
    from attractor.config import parse_config
    from attractor.runs.launch import train

    run = tmp_path / "policy"
    train(
        parse_config(
            {
                "task": {"name": "cartpole-lqr", "hidden": [16], "samples": 512},
                "trainer": {"optimizer": "adam", "lr": 0.01, "steps": 150, "batch_size": 64},
                "plan": {"members": 3, "vary": ["init_seed", "data_seed"]},
            }
        ),
        run,
    )
    config = _toml(
        tmp_path / "c.toml",
        f"""
        [world]
        name = "cartpole"
        model = "{run}"
        states = 24
        steps = 150
        scales = [1, 4]
        draws = 100
        growth_states = 2
        trajectories = 3
        [world.structural]
        constants = {{ length = [2.0] }}
        model = {{ weight-noise = [0.5] }}
        """,
    )
    shown = cli("world", config, "--out", tmp_path / "out", "--json")
    assert shown.code == 0, shown.err
    data = json.loads(shown.out)
    assert data["model"]["members"] == [0, 1, 2]
    assert 0 <= data["summary"]["low"] <= data["summary"]["basin_share"] <= data["summary"]["high"]
    assert {row["perturbation"] for row in data["structural"]} == {
        "model weight_noise",
        "length x",
    }
    assert set(data["summary"]["breaks"]) == {"model weight_noise", "length x"}
    assert {row["source"] for row in data["sources"]} >= {"member", "state"}
    assert {row["source"] for row in data["perturbed_sources"]} == {
        "model perturbation",
        "member",
        "state",
        "interactions+residual",
    }


BAD = [
    ("[world]\nname = 'nowhere'\n", "unknown world 'nowhere'"),
    ("[world]\nname = 'cartpole'\noptions = {colour = 1}\n", "no option 'colour'"),
    ("[world]\nname = 'double-well'\n[world.map]\nfactors = ['y']\n", "no factor 'y'"),
    ("[world]\nname = 'double-well'\nstates = 1\n", "states"),
    ("[world]\nname = 'double-well'\nscales = [0]\n", "scales"),
    ("[world]\nname = 'double-well'\nstructural = {constants = {g = [2.0]}}\n", "no constant 'g'"),
    (
        "[world]\nname = 'double-well'\nstructural = {model = {dropout = [0.1]}}\n",
        "no model to perturb",
    ),
    (
        "[world]\nname = 'cartpole'\nstructural = {model = {melt = [0.1]}}\n",
        "unknown perturbation kind 'melt'",
    ),
    ("[world]\nname = 'double-well'\nwhat = 1\n", "what"),
    ("[task]\nname = 'digits-mlp'\n", "no [world] table"),
    ("[world]\nname = 'double-well'\n[gpu]\nx = 1\n", "unknown table [gpu]"),
    ("[world]\nname = 'cartpole'\nmodel = 'runs/none:x'\n", "RUN:MEMBER"),
    ("[world]\nname = 'cartpole'\nmodel = ['a', 'b']\n", "takes its model from a run"),
    ("[world]\nname = 'lm-continuation'\nmodel = []\n", "empty list"),
    ("[world]\nname = 'lm-continuation'\nmodel = ['runs/none:x']\n", "RUN:MEMBER"),
    ("[world\n", "not valid TOML"),
    ("[world]\nname = 'cartpole'\n[task]\nhidden = [4]\n", "[world.options] task"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_config_is_one_line_and_writes_nothing(
    cli, tmp_path: Path, text: str, fragment: str
) -> None:
    config = _toml(tmp_path / "bad.toml", text)
    out = tmp_path / "out"
    assert_user_error(cli("world", config, "--out", out), fragment)
    assert not out.exists()


USER_WORLDS = """
import torch
from attractor.world.base import World

def _world(step, name):
    return World(
        name=name, description="broken on purpose", factors={"x": 0.1}, constants={"h": 0.1},
        steps=5, task=None, initial=lambda n, scale, g: torch.rand(n, 1, generator=g),
        step=step, features=lambda x, c: {"basin": (x[..., 0] > 0).long()},
        basin_feature="basin", project=lambda x: torch.cat([x, x], -1),
    )

def wrong_shape():
    return _world(lambda x, policy, t, c: x[:, :1], "wrong-shape")

def blows_up():
    return _world(lambda x, policy, t, c: x / 0.0 if t == 2 else x, "blows-up")

def not_a_world():
    return 42
"""


@pytest.mark.parametrize(
    ("function", "fragment"),
    [
        ("wrong_shape", "wrong-shape"),
        ("blows_up", "step 2"),
        ("not_a_world", "not a World"),
        ("missing", "has no function 'missing'"),
    ],
)
def test_a_broken_user_world_is_one_line(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, fragment: str
) -> None:
    (tmp_path / "myworlds.py").write_text(USER_WORLDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = _toml(tmp_path / "u.toml", f"[world]\nname = 'myworlds:{function}'\nstates = 8\n")
    # --json: a world found broken only while it runs may follow a progress line otherwise.
    assert_user_error(cli("world", config, "--out", tmp_path / "out", "--json"), fragment)


def test_worlds_lists_the_built_in_worlds(cli) -> None:
    shown = cli("worlds", "--json")
    assert shown.code == 0, shown.err
    assert {"double-well", "cartpole", "denoise-digits", "lm-continuation"} <= set(
        json.loads(shown.out)
    )


def test_a_user_world_is_found_in_the_current_directory_like_a_user_task(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwdworlds.py").write_text(
        USER_WORLDS + "\ndef fine():\n    return _world(lambda x, policy, t, c: x, 'fine')\n"
    )
    monkeypatch.chdir(tmp_path)
    config = _toml(tmp_path / "u.toml", "[world]\nname = 'cwdworlds:fine'\nstates = 8\n")
    shown = cli("world", config, "--out", tmp_path / "out", "--json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["world"] == "fine"


def test_lm_world_on_exported_directories_matches_the_run_they_came_from(
    cli, tmp_path: Path
) -> None:
    """A seed family of Hugging Face directories (here: a tiny-lm run's members, exported)
    gives the numbers the run itself gives; model perturbations are refused for them.
    """
    pytest.importorskip("transformers", reason="tiny-lm needs transformers (attractor[lm])")
    from attractor.config import parse_config
    from attractor.runs.launch import train
    from attractor.runs.lm_models import save_member

    small = {"layers": 1, "width": 32, "heads": 4, "windows_per_document": 2}
    run = tmp_path / "lm"
    train(
        parse_config(
            {
                "task": {"name": "tiny-lm", "context": 32, **small},
                "trainer": {"steps": 6, "batch_size": 8, "optimizer": "adam", "lr": 3e-3},
                "plan": {"members": 2, "vary": ["init_seed", "data_seed"]},
            }
        ),
        run,
    )
    dirs = [save_member(run, i, tmp_path / f"hf{i}") for i in range(2)]
    common = """
        name = "lm-continuation"
        states = 8
        scales = [1, 3]
        draws = 50
        trajectories = 0
        [world.options]
        prompt = "Assignment statements"
        lead_in = "\\n\\n"
        steps = 6
        context = 32
        [world.map]
        factors = ["substitution", "prefix"]
        points = 3
        scale = 1
        """
    shown = {}
    for name, model in (("run", f'"{run}"'), ("dirs", f'["{dirs[0]}", "{dirs[1]}"]')):
        config = _toml(tmp_path / f"{name}.toml", f"[world]\nmodel = {model}" + common)
        result = cli("world", config, "--out", tmp_path / f"out-{name}", "--json")
        assert result.code == 0, result.err
        shown[name] = json.loads(result.out)
    from attractor.runs.store import RunStore

    a, b = shown["run"], shown["dirs"]
    assert b["model"]["models"] == [str(d) for d in dirs] and b["model"]["members"] == [0, 1]
    assert [r["share"] for r in a["scales"]] == pytest.approx([r["share"] for r in b["scales"]])
    assert [r["feature"] for r in a["sources"]] == [r["feature"] for r in b["sources"]]
    stored = {k: RunStore(tmp_path / f"out-{k}").results()[0] for k in shown}
    maps = [stored[k].table("map") for k in shown]
    assert len(maps[0]) == 9 and maps[0]["share"].tolist() == maps[1]["share"].tolist()
    texts = [stored[k].table("samples")["text"].tolist() for k in shown]
    assert texts[0] and texts[0] == texts[1] and all(" ⟶ " in t for t in texts[0])
    report = (tmp_path / "out-dirs" / "report.html").read_text()
    assert "hf0" in report and "⟶" in report
    refused = _toml(
        tmp_path / "bad.toml",
        f'[world]\nname = "lm-continuation"\nmodel = "{dirs[0]}"\n'
        "[world.structural]\nmodel = {dropout = [0.1]}\n",
    )
    assert_user_error(cli("world", refused, "--out", tmp_path / "bad"), "stacked members")
    cart = _toml(tmp_path / "cart.toml", f'[world]\nname = "cartpole"\nmodel = "{dirs[0]}"\n')
    assert_user_error(cli("world", cart, "--out", tmp_path / "cart"), "not the model directory")
