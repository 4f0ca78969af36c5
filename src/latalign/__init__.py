"""latalign: latent alignment objectives (CTC, AXE, causal AXE, the operator algebra)."""

__version__ = "0.1.0"
