"""Per-position LM comparison: divergence oracles, sliding windows, streaming = all at once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from attractor.errors import UserError
from attractor.measure.lm_compare import STATS, compare_models, position_stats, sliding_windows
from attractor.tasks.corpus import Document

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(0, 4, 2), (3, 4, 2), (4, 4, 4), (17, 4, 1), (17, 5, 3), (100, 32, 16), (33, 32, 32)],
)
def test_sliding_windows_score_every_position_exactly_once(
    length: int, window: int, stride: int
) -> None:
    scored = []
    for start, end, first in sliding_windows(length, window, stride):
        assert 0 <= start <= first < end <= length and end - start <= window
        if start > 0:  # later windows keep at least window - stride tokens of context
            assert first - start >= window - stride
        scored += range(first, end)
    assert scored == list(range(length))


def test_divergence_bounds_on_random_and_extreme_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    a = (
        torch.randn(200, 50, generator=gen)
        * torch.tensor([0.1, 1.0, 30.0, 1000.0]).repeat(50)[:200, None]
    )
    b = torch.randn(200, 50, generator=gen) * 30
    stats = position_stats(a, b)
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert (stats["js"] >= 0).all() and (stats["js"] <= math.log(2)).all()
    assert (stats["tv"] >= 0).all() and (stats["tv"] <= 1).all()
    assert (stats["kl_ab"] >= 0).all() and (stats["kl_ba"] >= 0).all()
    # Disjoint point masses reach the bounds.
    point = position_stats(torch.tensor([[1e4, 0.0]]), torch.tensor([[0.0, 1e4]]))
    assert point["js"].item() == pytest.approx(math.log(2)) and point["tv"].item() == pytest.approx(
        1.0
    )
    same = position_stats(b, b)
    assert (
        (same["kl_ab"] == 0).all()
        and (same["kl_ba"] == 0).all()
        and (same["top1_agree"] == 1).all()
    )
    assert same["js"].abs().max() < 1e-12 and same["tv"].max() == 0


class _Toy(torch.nn.Module):
    """A causal model over bytes: logits at t depend on tokens <= t (a decayed bag of tokens)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(256, 256, generator=gen)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed[ids]  # [B, T, V]
        return torch.cumsum(e, dim=1) / torch.arange(1, ids.shape[1] + 1)[None, :, None]


def _model(seed: int, context: int = 16, vocab: int = 256):
    from attractor.tasks.lm_models import ByteTokenizer, LanguageModel

    return LanguageModel(_Toy(seed), ByteTokenizer(), vocab, context, f"toy{seed}")


def _docs() -> list[Document]:
    return [Document(f"d{i}", ("attractor basins " * (i + 1))[: 5 + 9 * i]) for i in range(6)]


def test_model_against_itself() -> None:
    a = _model(0)
    result = compare_models(a, a, _docs(), draws=50)
    assert result.means["kl_ab"].value == 0 and result.means["kl_ba"].value == 0
    assert result.means["js"].value < 1e-12 and result.means["tv"].value == 0
    assert result.means["top1_agree"].value == 1
    assert result.means["entropy_a"].value == result.means["entropy_b"].value


def test_streaming_equals_all_at_once() -> None:
    a, b = _model(0, context=64), _model(1, context=64)
    docs = _docs()  # every document fits the 64-token context: one window each
    streamed = compare_models(a, b, iter(docs), batch_size=1, draws=100, top_k=3)
    batched = compare_models(a, b, docs, batch_size=64, draws=100, top_k=3)
    # All at once: every document in one forward pass, every position's statistics kept.
    per_position = []
    for doc in docs:
        ids = torch.tensor([list(doc.text.encode())])
        per_position.append(
            torch.stack([position_stats(a.module(ids)[0], b.module(ids)[0])[s] for s in STATS], 1)
        )
    table = torch.cat(per_position)
    assert streamed.tokens == batched.tokens == len(table)
    for k, name in enumerate(STATS):
        assert streamed.means[name].value == pytest.approx(
            float(table[:, k].mean()), rel=1e-10, abs=1e-12
        )
        assert batched.means[name].value == pytest.approx(
            streamed.means[name].value, rel=1e-10, abs=1e-12
        )
        assert (streamed.means[name].low, streamed.means[name].high) == pytest.approx(
            (batched.means[name].low, batched.means[name].high), rel=1e-9
        )
        exact = torch.quantile(table[:, k], torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
        assert list(streamed.quantiles[name].values()) == pytest.approx(
            exact.tolist(), rel=1e-10, abs=1e-12
        )
    assert [t.position for t in streamed.top] == [t.position for t in batched.top]
    top_js = [t.stats["js"] for t in streamed.top]
    assert top_js == sorted(top_js, reverse=True) and top_js[0] == pytest.approx(
        float(table[:, STATS.index("js")].max())
    )


def test_sliding_windows_cover_long_documents() -> None:
    a, b = _model(0, context=8), _model(1, context=8)
    docs = _docs()
    result = compare_models(a, b, docs, window=8, stride=3, batch_size=5, draws=20)
    assert result.tokens == sum(len(d.text.encode()) for d in docs)
    low, high = result.means["js"].low, result.means["js"].high
    assert low <= result.means["js"].value <= high
    top = result.top[0]
    assert top.document in {d.name for d in docs} and len(top.top_a) == 3 and top.context


def test_different_vocabularies_are_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="different vocabularies") as info:
        compare_models(_model(0), _model(1, vocab=300), _docs())
    assert "\n" not in str(info.value)


_PEAK_SCRIPT = """
import resource, sys, torch
from attractor.measure.lm_compare import compare_models
from attractor.tasks.corpus import Document
from attractor.tasks.lm_models import ByteTokenizer, wrap_hf
from attractor.tasks.tiny_lm import TinyLMOptions, build_gpt2, gpt2_config
torch.manual_seed(0)
config = gpt2_config(TinyLMOptions(width=16, context=32, layers=1, heads=2))
a = wrap_hf(build_gpt2(config).model, ByteTokenizer(), "a")
b = wrap_hf(build_gpt2(config).model, ByteTokenizer(), "b")
def corpus(n):  # a generator: the corpus itself is never held in memory
    for i in range(n):
        yield Document(f"d{i}", ("lorem ipsum %d " % i) * 40)
compare_models(a, b, corpus(4), batch_size=4, draws=10)  # warm up allocations and imports
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
compare_models(a, b, corpus(int(sys.argv[1])), batch_size=4, draws=10, reservoir=1000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_memory_stays_flat_over_a_corpus_20x_a_batch() -> None:
    """Peak RSS growth (KiB) over a corpus of 20x the batch vs 1x stays within a few MiB."""
    import subprocess
    import sys

    pytest.importorskip("transformers", reason="needs transformers (pip install 'attractor[lm]')")
    growth = {}
    for documents in (4, 80):
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT, str(documents)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        growth[documents] = int(done.stdout.split()[-1])
    # 80 documents of ~570 bytes: the windows, logits and per-position statistics of the whole
    # corpus would be tens of MiB; streaming keeps one batch plus per-document sums.
    assert growth[80] - growth[4] < 8 * 1024, growth


def test_corpus_reader_handles_empty_files_bad_bytes_and_long_documents(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs transformers (pip install 'attractor[lm]')")
    from attractor.tasks.corpus import iter_corpus
    from attractor.tasks.lm_models import ByteTokenizer, wrap_hf
    from attractor.tasks.tiny_lm import TinyLMOptions, build_gpt2, gpt2_config

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me ".encode("latin-1") * 5)  # not UTF-8
    (tmp_path / "long.txt").write_text("the quick brown fox " * 500)  # 10,000 bytes: many windows
    documents = list(iter_corpus(str(tmp_path)))
    assert [d.text == "" for d in documents] == [True, False, False]
    assert "\ufffd" in documents[1].text  # undecodable bytes replaced, not a crash
    torch.manual_seed(0)
    config = gpt2_config(TinyLMOptions(width=16, context=32, layers=1, heads=2))
    model = wrap_hf(build_gpt2(config).model, ByteTokenizer(), "a")
    result = compare_models(model, model, iter(documents), batch_size=16, draws=10).to_dict()
    # The empty file has no tokens; every byte of the others is read (undecodable ones as U+FFFD).
    total = sum(len(d.text.encode()) for d in documents)
    assert result["tokens"] == total and result["documents"] == 2
    assert result["means"]["kl_ab"]["value"] == 0  # a model against itself


def test_one_document_gives_null_intervals_with_a_note() -> None:
    import json

    from attractor.cli.lm_format import format_comparison

    a, b = _model(0), _model(1)
    one = compare_models(a, b, [Document("only", "attractor basins " * 8)], draws=50)
    assert one.documents == 1 and one.note and "at least 2 documents" in one.note
    for name in STATS:
        estimate = one.means[name]
        assert math.isfinite(estimate.value)
        assert estimate.low is None and estimate.high is None  # never low = high = value
    data = json.loads(json.dumps(one.to_dict()))  # valid JSON: null, not NaN
    assert data["means"]["js"]["low"] is None and data["note"] == one.note
    text = format_comparison({**data, "corpus": "one.txt"})
    assert "n/a" in text and "note: 1 document" in text
    two = compare_models(a, b, _docs()[:2], draws=50)
    assert two.note is None and two.means["js"].low is not None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("runs/nope:0", "'runs/nope' is not a run directory (it does not exist)"),
        ("{dir}:3", "is not a run directory (no manifest.json in it)"),
        ("runs/x:best", "is not module:function"),
    ],
)
def test_a_path_spec_that_is_not_a_run_says_so(spec: str, says: str, tmp_path: Path) -> None:
    from attractor.runs.lm_models import load_model

    with pytest.raises(UserError) as info:
        load_model(spec.format(dir=tmp_path))
    message = str(info.value)
    assert says in message and "No module named" not in message and "\n" not in message
