"""trainer2 as a learned evaluator: the human's examples -> evaluators -> trainers -> models.

Three levels, each an ensemble (see ``attractor evaluator``):

* :mod:`~attractor.stack.learned.examples`: the human's labelled examples and the
  perturbations of them a member sees (bootstrap, subsample, flipped labels, augmentation);
* :mod:`~attractor.stack.learned.reward_model`: evaluators (reward models) trained on each
  perturbed set, vectorized over members;
* :mod:`~attractor.stack.learned.finetune`: each evaluator drives a trainer (best-of-n
  rejection-sampling or reward-weighted fine-tuning) of a generator.
"""
