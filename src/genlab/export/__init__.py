"""Export a run's networks for deployment. ONNX only for now (see onnx.py)."""

from genlab.export.onnx import (FORMATS, ExportError, backend_families, describe, exportable_families, export,
                                onnx_backend)

__all__ = ["FORMATS", "ExportError", "backend_families", "describe", "exportable_families", "export",
           "onnx_backend"]
