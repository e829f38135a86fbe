"""stableprompt: discrete prompt optimisation for frozen LMs by reinforcement learning."""

__version__ = "0.1.0"
