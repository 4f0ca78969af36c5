"""The translation stack: data, BPE, transformer, criteria, training, decoding, metrics.

Imports the alignment library (:mod:`latalign.align`); the library never imports this.
"""
