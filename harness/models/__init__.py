"""The models: the ViT encoder and its named shapes, the two-tower text tower, the decoder."""
