"""Model loading layer: the only importer of diffusers, transformers and open_clip."""
