"""The report page: every scored or predicted image, sorted by error or uncertainty, with its
layers, in a folder that opens from file:// (page/ holds its HTML, CSS and JavaScript).
Imports: segnet.inference, segnet.runtime, segnet.utils (and model.py)."""
