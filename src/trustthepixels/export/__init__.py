"""export.py: a checkpoint as one ONNX file or a Hugging Face folder with its model card."""
