"""Digistore24: its signed IPN (``signature``, ``ipn``) and its API (``client``), in the domain's terms.

Facts, sources and where they disagree are in docs/platforms/digistore24.md; what is not yet wired into the
pipeline, and the port it needs, is in that file's "What the pipeline needs".
"""
