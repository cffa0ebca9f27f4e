"""Language models: load and save causal LMs, compare two over a corpus, search for divergent contexts.

Submodules import ``transformers`` lazily (extra ``lm``); nothing here downloads from a hub.

* :mod:`attractor.lm.corpus`: documents from ``builtin:pydoc``, a text file or a folder.
* :mod:`attractor.lm.models`: load a local Hugging Face directory, a run member
  (``RUN_DIR:MEMBER``) or ``module:function``; save a run member as a Hugging Face directory.
* :mod:`attractor.lm.compare`: per-position KL / JS / TV / top-1 agreement / entropy of two
  models over a corpus, streamed, with bootstrap intervals over documents.
* :mod:`attractor.lm.search`: contexts where two models' next-token distributions diverge most.
* :mod:`attractor.lm.measure`: loss, pairwise JS and KL to the mean of a ``tiny-lm`` ensemble.
* :mod:`attractor.lm.commands`: plain functions behind ``attractor lm-compare`` / ``lm-search`` / ``lm-export``.
"""
