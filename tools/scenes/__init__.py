"""Inhouse's own small text-to-image model: procedural scenes, training, detectors and evaluation."""
