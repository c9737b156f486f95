"""srl-agent: Supervised Reinforcement Learning (arXiv 2510.25992) for SWE agents and step-wise math."""

__version__ = "0.1.0"
