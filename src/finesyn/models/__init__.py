"""Networks: the encoder backbones, the projection/prediction heads and the module's decoder."""
