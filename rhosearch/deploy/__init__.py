"""What leaves rhosearch: ONNX export (and its timing)."""
