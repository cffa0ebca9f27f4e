"""The text setting: the human prefers some pydoc windows (a known rule, e.g. "has code");
the generator is a ``tiny-lm`` byte-level language model; evaluators read a fixed feature
map of a text (the base model's pooled hidden state); the rule scores the true preference
of every generated text.

Models are compared in function space by their next-token distributions on held-out
windows: the Jensen-Shannon divergence between two fine-tuned models, averaged over a
window's positions (the measure of ``attractor lm-compare``, here between stacked members).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from attractor.measure.divergence import js
from attractor.runs.store import RunStore
from attractor.stack.learned.examples import ExampleRow, ExampleSets
from attractor.stack.learned.reward_model import Evaluators
from attractor.stack.learned.setting import Trained, base_run, design_options
from attractor.stack.learned.text import (
    BaseFeatures,
    TextExamples,
    encode_bytes,
    held_out_texts,
    pydoc_examples,
    pydoc_windows,
    rule_of,
    text_sets,
)
from attractor.stack.learned.text_finetune import (
    TextFinetuneDesign,
    rule_preference,
    text_finetune,
)
from attractor.training.forward import batched_forward

#: Training steps of the base model when none is given.
BASE_STEPS = 400
#: The base model trained when none is given: tiny-lm at half width and context (a 2-byte
#: prompt and 48 sampled bytes fit; held-out loss about 1.9 nats per byte after 400 steps).
BASE_TASK = {"name": "tiny-lm", "width": 64, "context": 64, "windows_per_document": 4}
BASE_TRAINER = {"optimizer": "adam", "lr": 3e-3, "batch_size": 16, "schedule": "constant"}
#: Held-out windows the evaluators are judged on and the models compared on.
_HELD_OUT = 200
_COMPARED = 32
#: Unlabelled training windows considered for "label next" (their features cost a pass).
_POOL = 600
_SAMPLES_PER_MEMBER = 4
_SAMPLED_MEMBERS = 8


def text_rows(texts: Sequence[str], labels: list[Any], column: str) -> pd.DataFrame:
    return pd.DataFrame({column: labels, "text": list(texts)})


class TextSetting:
    """See the module docstring; built by the experiment from its settings."""

    def __init__(
        self, settings: Any, store: RunStore, progress: bool, device: torch.device
    ) -> None:
        self.settings = settings
        self.device = device
        self.rule = rule_of(settings.rule)
        self.base = base_run(
            settings.model,
            "tiny-lm",
            lambda root: _train_base(settings.base_steps or BASE_STEPS, root, progress, device),
            store,
        )
        self.context = int(self.base.template.model.config.n_positions)
        self.features = BaseFeatures(self.base.template, self.context, device=device)
        self.inputs = self.features.width
        self.source = self.base.source
        # The held-out windows (their pool takes a pass over the corpus) and their features
        # (a pass of the base model) are fixed: found once, not per factorial.
        available = len(pydoc_windows("test", settings.length))
        self.held_texts, self.held_truth = held_out_texts(
            settings.rule, min(_HELD_OUT, available), settings.length
        )
        self.held_features = self.features(self.held_texts)

    def examples(self) -> TextExamples:
        s = self.settings
        return pydoc_examples(s.rule, s.examples, s.seed, s.positives, s.length)

    def sets(self, examples: TextExamples, rows: Sequence[ExampleRow]) -> ExampleSets:
        return text_sets(examples, rows, self.features)

    def held_out(self) -> tuple[Tensor, Tensor]:
        return self.held_features, self.held_truth

    def train(
        self, evaluators: Evaluators, trainer: dict[str, Any], seeds: Sequence[int]
    ) -> Trained:
        design = TextFinetuneDesign(**design_options(trainer, TextFinetuneDesign, "text"))
        params, buffers = self.base.copies(evaluators.members)

        def reward(texts: list[list[str]]) -> Tensor:
            # The evaluator reads the base model's features of each sampled text.
            return evaluators.logits(torch.stack([self.features(batch) for batch in texts]))

        true_preference = rule_preference(self.settings.rule)
        done = text_finetune(
            self.base.template,
            params,
            buffers,
            reward,
            true_preference,
            design,
            seeds,
            self.settings.eval_samples,
            self.context,
            device=self.device,
        )
        # held_out_texts gives the pool's first windows: the compared ones are the first few.
        compared = self.held_texts[:_COMPARED]
        shown = [texts[:_SAMPLES_PER_MEMBER] for texts in done.texts[:_SAMPLED_MEMBERS]]
        members = [i for i, texts in enumerate(shown) for _ in texts]
        return Trained(
            proxy=done.proxy,
            true=done.true,
            true_final=true_preference(done.texts).double(),
            classes=None,
            distances=self._next_token_js(done.params, done.buffers, compared),
            distance=(
                "next-token JS on held-out text (mean pairwise)",
                f"nats, mean over the positions of {len(compared)} held-out windows",
            ),
            samples=text_rows([t for texts in shown for t in texts], members, "member"),
        )

    def _next_token_js(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], texts: list[str]
    ) -> Tensor:
        """``[m, m, k]``: JS between two models' next-token distributions, averaged over the
        positions of each of ``k`` windows (all windows cut to the shortest's length);
        computed on the setting's device, returned on the CPU.
        """
        ids = encode_bytes(texts, self.context)
        width = min(len(row) for row in ids)
        tokens = torch.tensor([row[:width] for row in ids], dtype=torch.int64)
        m = next(iter(params.values())).shape[0]
        forward = batched_forward(self.base.template)
        on = {k: v.to(self.device) for k, v in params.items()}
        kept = {k: v.to(self.device) for k, v in buffers.items()}
        with torch.no_grad():
            tokens = tokens.to(self.device).expand(m, *tokens.shape)
            logp = forward(on, kept, tokens).log_softmax(-1)
        out = torch.zeros(m, m, len(texts), dtype=torch.float64)
        for i in range(m):  # m^2 pairs of [k, L, V]: one row of pairs at a time (memory)
            out[i] = js(logp[i : i + 1], logp).mean(-1).double().cpu()
        return out.clamp_min(0.0)

    def shown(self, examples: TextExamples) -> pd.DataFrame:
        return text_rows(examples.texts, examples.labels.tolist(), "label")

    def pool(self, examples: TextExamples) -> tuple[Tensor, pd.DataFrame]:
        """Training windows the human has not labelled (the first few hundred: a feature
        pass each).
        """
        labelled = set(examples.texts)
        pool = [t for t in pydoc_windows("train", self.settings.length) if t not in labelled]
        pool = pool[:_POOL]
        rule = [int(self.rule(t)) for t in pool]
        rows = text_rows(pool, list(range(len(pool))), "index").assign(rule=rule)
        return self.features(pool), rows


def _train_base(steps: int, root: Any, progress: bool, device: torch.device) -> Any:
    from attractor.config import parse_config
    from attractor.runs.launch import train

    config = parse_config(
        {
            "task": dict(BASE_TASK),
            "trainer": {**BASE_TRAINER, "steps": steps},
            "plan": {"members": 1, "vary": ["init_seed"]},
            "run": {"device": str(device)},  # placement: the base's directory is the same
        },
        source="the evaluator's base language model",
    )
    return train(config, root, progress=progress)


__all__ = ["BASE_STEPS", "TextSetting", "text_rows"]
