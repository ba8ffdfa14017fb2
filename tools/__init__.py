"""The model tools: one file per pipeline family, a pipeline cache and the `Toolset` the agents call."""
