"""The words every layer shares: actions, coordinate frames, prompts, errors, samples.

This package imports nothing else of medseg-agent; everything above depends on it.
"""
