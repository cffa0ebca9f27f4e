"""Measurements on finished ensembles."""

from attractor.measure.summary import summarize

__all__ = ["summarize"]
