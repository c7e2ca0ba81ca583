"""The detector: everything that turns a checkpoint into answers, so that every command answers alike.

`checkpoint` rebuilds it from a checkpoint alone (weights, preprocessing, labels, the usable-image rule, the
calibration record); `scoring` scores image files in batches exactly as training's evaluation sees them;
`calibrate` fits a calibration record on labelled files (train.py's last pass, calibrate.py);
`predictions` is the one predictions format and the one verdict rule. eval.py, predict.py, serve.py, export.py,
compare.py and benchmark.py score through these and nothing else.
"""
