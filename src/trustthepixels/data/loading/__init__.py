"""Feeding training: where a batch comes from (split, preprocessing, caches, the LightningDataModule)."""
