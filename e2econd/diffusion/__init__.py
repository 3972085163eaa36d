"""Diffusion process: the continuous-time cosine schedule and the samplers."""
