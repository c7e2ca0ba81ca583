"""benchmark.py's generalization matrix: every source trained on and tested on every other (`rows`), folds pooled
(`folds`), matrix.md, matrix.csv and the heatmap written as rows finish (`matrix`)."""
