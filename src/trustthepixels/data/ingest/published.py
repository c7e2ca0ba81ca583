"""Where the project's dataset comes from: the published zip of the reduced set, and the Hugging Face dataset it was
reduced from (`prepare_data.py source=release` and `source=hf`)."""

RELEASE_URL = "https://github.com/lucaslbld/GP01-AI-and-Application-project/releases/download/v1.0/dataset.zip"
HF_DATASET = "Hemg/AI-Generated-vs-Real-Images-Datasets"
