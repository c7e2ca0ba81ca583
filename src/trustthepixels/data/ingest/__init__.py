"""Getting a dataset: where a new source comes in (find, decode and fingerprint the files of an `AI/` +
`Real/` folder; build or download the reduced set)."""
