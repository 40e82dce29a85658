"""The model bundle: one versioned ``model.tar.gz`` holding everything serving needs. What ships is what
was measured: the models and feature tables the evaluation scored (fit on everything before the test
window)."""

from components.bundle.format import Bundle, load_bundle

__all__ = ["Bundle", "load_bundle"]
