"""Judges score a probe's outputs: refusal patterns, an LLM rubric, guard classifiers, CLIP."""
