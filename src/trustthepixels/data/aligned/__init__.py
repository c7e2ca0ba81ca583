"""Aligned fakes: each real photo passed through an image autoencoder is a fake with the photo's own content, so a
detector trained on the pair can only learn what the decoder leaves (Rajan, Lee et al., ICLR 2025)."""
