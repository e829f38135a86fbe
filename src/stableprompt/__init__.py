"""stableprompt: discrete prompt optimisation for frozen LMs by reinforcement learning."""

__version__ = "0.1.0"


def optimize(*args, **kwargs):
    """Train a prompt in one call; see `stableprompt.api.optimize` (imported on first use, so
    `import stableprompt` stays light)."""
    from stableprompt.api import optimize as _optimize

    return _optimize(*args, **kwargs)


__all__ = ["__version__", "optimize"]
