"""Export a run's networks for deployment. ONNX only for now (see onnx.py)."""

from genlab.export.onnx import FORMATS, SUPPORTED, ExportError, describe, export, onnx_backend

__all__ = ["FORMATS", "SUPPORTED", "ExportError", "describe", "export", "onnx_backend"]
