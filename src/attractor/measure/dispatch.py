"""One entry point for ``attractor measure`` / ``report``: the measures a run's task calls for.

A classification run gets :func:`~attractor.measure.spread.measure_ensemble` (function,
representation and weight space, basins, LMC); a language-model run — its task declares
``test_units``, the held-out document of every window — gets next-token measures
(:func:`~attractor.measure.lm.measure_lm`). Either way the result is named ``measures``,
so a run holds one set of spread measures and the CLI needs no case for language models.
"""

from __future__ import annotations

from attractor.measure.lm import LMMeasures, measure_lm
from attractor.measure.spread import MeasureOptions, Measures, measure_ensemble
from attractor.runs.ensemble import Ensemble
from attractor.runs.progress import Stages


def measure_run(
    ens: Ensemble, options: MeasureOptions | None = None, progress: bool = False
) -> Measures | LMMeasures:
    """The spread measures of ``ens`` (write them with ``ens.store.write``).

    Language-model runs use ``options.split``, ``draws`` and ``seed``; CKA layers, LMC and
    basin options apply to classification runs only. ``progress``: a line on stderr as
    each stage of the measuring begins.
    """
    options = options or MeasureOptions()
    if ens.task.test_units is not None:
        # One stage: the next-token measures go through the members' windows in one pass.
        with Stages("measure", 1, progress) as stages:
            stages.begin(f"next-token measures of {len(ens.members)} members, {options.split}")
            return measure_lm(ens, split=options.split, draws=options.draws, seed=options.seed)
    return measure_ensemble(ens, options, progress=progress)
