"""The data layer.

- sources: labelled patches from class folders, label files, manifests or slides (`open_patch_source`);
- splits: train/val/test splits that keep each slide in one split;
- slides, tiling: OpenSlide access and tiling a whole slide over its tissue (`tile_slide`);
- tissue, synth_patches, synth_slide, pyramid: synthetic H&E patches and whole slides.
"""
