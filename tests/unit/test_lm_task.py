"""tiny-lm: documents, windows, groups and corpora; no training here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attractor.config import TaskConfig
from attractor.errors import UserError
from attractor.plan import PlanRow
from attractor.tasks import build_task
from attractor.tasks.corpus import BUILTIN_PYDOC, Document, iter_corpus, paragraphs, split_documents
from attractor.tasks.tiny_lm import window_starts, windows
from attractor.training.data import member_pool

TINY = {"layers": 1, "width": 32, "heads": 4, "context": 32}


def _task(**options):
    return build_task(TaskConfig(name="tiny-lm", **{**TINY, **options}))


def test_builtin_corpus_ships_with_python() -> None:
    docs = list(iter_corpus(BUILTIN_PYDOC))
    assert len(docs) > 20 and all(d.text for d in docs)
    train, test = split_documents(docs, 0.2, 0)
    assert {d.name for d in train}.isdisjoint(d.name for d in test) and len(train) + len(
        test
    ) == len(docs)


def test_windows_are_next_byte_pairs() -> None:
    doc = Document("d", "abcdefghij" * 3)
    x, y, owner = windows([doc], 8, 8, None)
    assert x.shape == y.shape == (3, 8) and (owner == 0).all()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert bytes(x[0].tolist()) == b"abcdefgh" and bytes(y[0].tolist()) == b"bcdefghi"
    assert window_starts(1000, 10, 10, 4) == [0, 330, 650, 980]


def test_task_shapes_groups_and_units() -> None:
    task = _task(n_groups=4)
    assert task.x_train.shape[1:] == (32,) and task.y_train.shape == task.x_train.shape
    assert task.x_train.dtype == torch.int64 and int(task.x_train.max()) < 256
    assert task.group_ids == [0, 1, 2, 3] and torch.equal(task.groups, task.units % 4)
    assert len(task.documents) == int(task.units.max()) + 1
    assert set(task.documents).isdisjoint(task.test_documents)
    # Holding out a group removes whole documents: no window of them remains in the pool.
    pool = member_pool(task, PlanRow(member=0, holdout_group=2))
    assert (task.groups[pool] != 2).all()
    kept_docs = set(task.units[pool].tolist())
    assert kept_docs == {u for u in range(len(task.documents)) if u % 4 != 2}
    # The bootstrap resamples whole documents: every drawn document keeps all its windows.
    boot = member_pool(task, PlanRow(member=0, bootstrap=5))
    per_doc = torch.bincount(task.units, minlength=len(task.documents))
    drawn = torch.bincount(task.units[boot], minlength=len(task.documents))
    assert bool(((drawn % per_doc.clamp_min(1)) == 0).all()) and drawn.sum() > 0
    assert len(set(task.units[boot].tolist())) < len(
        task.documents
    )  # with replacement: some left out
    pytest.importorskip(
        "transformers", reason="tiny-lm's model needs transformers (pip install 'attractor[lm]')"
    )
    model = task.make_model()
    assert model(task.x_train[:3]).shape == (3, 32, 256)


def test_bad_options_are_one_line() -> None:
    with pytest.raises(UserError, match="heads"):
        _task(heads=3)
    with pytest.raises(UserError, match="corpus"):
        _task(corpus="/nonexistent/corpus.txt")


def test_file_and_directory_corpora(tmp_path: Path) -> None:
    text = "\n\n".join(f"paragraph {i} " + "x" * 50 for i in range(10))
    docs = list(paragraphs(text, "f", min_chars=120))
    assert len(docs) == 5 and "".join(d.text for d in docs).count("paragraph") == 10
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second")
    (tmp_path / "c.bin").write_text("ignored")
    assert [d.text for d in iter_corpus(str(tmp_path))] == ["first", "second"]
    single = tmp_path / "one.txt"
    single.write_text(text)
    assert len(list(iter_corpus(str(single)))) >= 1
    with pytest.raises(UserError):
        list(iter_corpus("builtin:nope"))
