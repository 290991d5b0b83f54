"""Finding files: which folders hold a dataset (layouts, benchmarks), which image pairs with which mask, the splits and the one index of samples. Imports: segnet.data.pixels, segnet.utils."""
