"""Networks: the backbones, the heads, and the decoder g of the synthesized-pair module."""
