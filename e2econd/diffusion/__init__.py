"""Diffusion process: the cosine schedule, the samplers' update coefficients and plans, and the
network evaluation inside the sampler loop (guidance, CUDA graphs)."""
