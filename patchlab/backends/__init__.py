"""Peer hook paths (TransformerLens, nnsight): independent checks of patchlab's own torch hooks."""
