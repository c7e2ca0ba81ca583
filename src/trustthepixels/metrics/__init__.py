"""Numbers from predictions: the metrics (`core`), their 95% intervals (`intervals`) and the paired tests that
compare two models (`comparison`). NumPy, SciPy and torchmetrics only: nothing here knows about models."""
