"""The synthesized-pair module: L = L_C + α·L_R + ν·L_Cp, usable with any registered SSL method."""

from finesyn.pairs.module import SynthLosses, SynthPairs

__all__ = ["SynthPairs", "SynthLosses"]
