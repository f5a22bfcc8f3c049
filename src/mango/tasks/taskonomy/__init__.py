"""Multimodal image-to-image translation on the Taskonomy subset (TokenFusion / CEN protocol)."""
