"""Evaluation protocols (k-NN, linear / attentive / low-shot probes, fine-tuning), analysis
metrics, official checkpoint import and result records. Entry: ``eval.api.evaluate`` and
``python eval/launch.py``."""
