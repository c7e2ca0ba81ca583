"""Auditing a dataset: shortcuts a detector could learn instead of the generator's traces (metadata,
spectrum) and near-duplicates."""
