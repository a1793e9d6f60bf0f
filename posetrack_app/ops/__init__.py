"""Pure numeric functions on numpy arrays: boxes, OKS, affine transforms, heatmap decoding."""
