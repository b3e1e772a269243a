"""Experiment scripts that produce the paper's figures (run as ``python analyses/<script>.py``)."""
