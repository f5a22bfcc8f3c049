"""Task heads on fused features."""
