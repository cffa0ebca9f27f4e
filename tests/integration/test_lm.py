"""tiny-lm end to end: train through the engine, export a member, compare and search two members."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attractor.config import parse_config
from attractor.errors import UserError

pytest.importorskip(
    "transformers", reason="language models need transformers (pip install 'attractor[lm]')"
)
pytestmark = pytest.mark.usefixtures("one_thread")

TASK = {
    "name": "tiny-lm",
    "layers": 1,
    "width": 32,
    "heads": 4,
    "context": 32,
    "windows_per_document": 2,
}


def _config(strategy: str, vary: list[str], members: int = 2):
    return parse_config(
        {
            "task": TASK,
            "trainer": {"steps": 6, "batch_size": 8, "optimizer": "adam", "lr": 3e-3},
            "plan": {"members": members, "vary": vary},
            "run": {"snapshots": 2, "strategy": strategy},
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attractor.runs.launch import train

    out = tmp_path_factory.mktemp("lm") / "run"
    train(_config("loop", ["init_seed", "data_seed", "bootstrap", "holdout_group"]), out)
    return out


def test_loop_training_with_bootstrap_and_held_out_documents(run: Path) -> None:
    from attractor.runs.ensemble import Ensemble

    ens = Ensemble.load(run)
    assert ens.strategy == "loop" and ens.members == [0, 1]
    final = ens.final_metrics()
    assert final["test_loss"].between(0, 6).all() and final["train_accuracy"].between(0, 1).all()
    assert ens.plan["holdout_group"].notna().all() and ens.plan["bootstrap"].notna().all()
    x, _ = ens.eval_set()
    assert ens.predict(x[:2]).shape == (2, 2, 32, 256)


def test_vectorized_matches_loop(tmp_path: Path) -> None:
    from attractor.runs.launch import resolve_strategy, train

    config = _config("auto", ["init_seed", "data_seed"])
    from attractor.tasks import build_task

    assert resolve_strategy(config, build_task(config.task)) == "vectorized"
    vec = train(config, tmp_path / "vec").final_metrics()
    loop = train(_config("loop", ["init_seed", "data_seed"]), tmp_path / "loop").final_metrics()
    assert vec["test_loss"].to_numpy() == pytest.approx(loop["test_loss"].to_numpy(), abs=1e-5)


def test_export_reload_gives_identical_logits(run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from attractor.cli.lm import lm_export
    from attractor.runs.lm_models import load_model

    info = lm_export(run, 1, tmp_path / "hf")
    assert {"config.json", "model.safetensors"} <= set(info["files"])
    member, exported = load_model(f"{run}:1"), load_model(info["path"])
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(member.logits(ids), exported.logits(ids))
    plain = AutoModelForCausalLM.from_pretrained(info["path"], local_files_only=True)
    assert torch.allclose(plain(input_ids=ids).logits, member.logits(ids), atol=1e-5)
    with pytest.raises(UserError, match="not empty"):
        lm_export(run, 1, tmp_path / "hf")
    with pytest.raises(UserError):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no member"):
        load_model(f"{run}:7")


def test_compare_and_search_members(run: Path, tmp_path: Path) -> None:
    from attractor.cli.lm import format_comparison, format_search, lm_compare, lm_search

    corpus = tmp_path / "corpus.txt"
    # Three documents of >= 2000 characters (the corpus reader's minimum): intervals over
    # documents need at least two.
    corpus.write_text("\n\n".join(f"def f{i}(x):\n    return x + {i}\n" * 80 for i in range(3)))
    data = lm_compare(f"{run}:0", f"{run}:1", str(corpus), batch_size=4, draws=50, top_k=3)
    js = data["means"]["js"]
    assert data["documents"] == 3
    assert 0 < js["value"] < 0.7 and js["low"] <= js["value"] <= js["high"] and data["tokens"] > 0
    assert "most divergent" in format_comparison(data)
    same = lm_compare(f"{run}:0", f"{run}:0", str(corpus), draws=10)
    assert same["means"]["kl_ab"]["value"] == 0 and same["means"]["top1_agree"]["value"] == 1
    found = lm_search(f"{run}:0", f"{run}:1", str(corpus), budget=140, length=8)
    assert set(found["methods"]) == {"baseline", "sample-a", "sample-b", "sample-mix", "gcg"}
    assert all(m["passes"] <= 140 for m in found["methods"].values())
    assert "gcg" in format_search(found)


def test_gcg_finds_a_planted_divergence_better_than_random_contexts(run: Path) -> None:
    from attractor.runs.lm_models import load_model
    from attractor.search.tokens import search_divergent
    from attractor.tasks.corpus import Document

    a, b = load_model(f"{run}:0"), load_model(f"{run}:0")
    with (
        torch.no_grad()
    ):  # byte 200 never occurs in the corpus: only a search can put it in a context
        b.hf.transformer.wte.weight[200] += 3 * torch.randn(
            32, generator=torch.Generator().manual_seed(0)
        )
    docs = [Document("d", "plain ascii text about basins of attraction. " * 20)]
    result = search_divergent(a, b, docs, budget=300, length=8, methods=("baseline", "gcg"))
    base, found = result.methods["baseline"], result.methods["gcg"]
    assert base.passes <= 300 and found.passes <= 300
    assert base.best[0].divergence < 1e-9
    assert found.best[0].divergence > 1e-3 and 200 in found.best[0].ids


def test_measure_lm_run(run: Path) -> None:
    from attractor.measure.lm import measure_lm_run
    from attractor.runs.ensemble import Ensemble

    data = measure_lm_run(run, draws=50).to_json()
    final = Ensemble.load(run).final_metrics()
    assert data["loss"]["per_member"] == pytest.approx(final["test_loss"].tolist(), rel=1e-5)
    js = data["pairwise_js"]
    assert (
        0 < js["value"] <= 0.7
        and js["matrix"][0][0] == 0
        and js["matrix"][0][1] == pytest.approx(js["matrix"][1][0])
    )
    assert data["kl_to_mean"]["value"] > 0 and data["documents"] >= 2
    from attractor.cli.lm import format_lm_measure

    assert "pairwise JS" in format_lm_measure(data)


def test_hf_directory_with_its_own_tokenizer(run: Path, tmp_path: Path) -> None:
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from attractor.cli.lm import lm_compare, lm_export
    from attractor.runs.lm_models import load_model
    from attractor.tasks.lm_models import TOKENIZER_KEY, HFTokenizer

    path = Path(lm_export(run, 0, tmp_path / "hf")["path"])
    config = json.loads((path / "config.json").read_text())
    del config[TOKENIZER_KEY]
    (path / "config.json").write_text(json.dumps(config))
    words = Tokenizer(
        models.WordLevel({f"w{i}": i for i in range(255)} | {"[UNK]": 255}, unk_token="[UNK]")
    )
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(str(path))
    model = load_model(str(path))
    assert isinstance(model.tokenizer, HFTokenizer) and model.tokenizer.encode("w3 w7") == [3, 7]
    with pytest.raises(UserError, match="different tokenizers") as info:
        lm_compare(str(path), f"{run}:1", "builtin:pydoc")
    assert "\n" not in str(info.value)


def test_diff_of_a_classifier_and_a_language_model_is_one_line(
    run: Path, tmp_path: Path, cli
) -> None:
    from attractor.runs.launch import train
    from tests.conftest import tiny_config

    digits = tmp_path / "digits"
    train(tiny_config(trainer={"steps": 3}, plan={"members": 2}), digits)
    for a, b in [(f"{digits}:0", f"{run}:0"), (f"{run}:0", f"{digits}:0")]:
        result = cli("diff", a, b, "--points", "2", "--steps", "3")
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
        assert "Traceback" not in result.err
