"""The algorithms of "Rethinking Mixture-of-Agents" over an OpenAI-compatible client."""
