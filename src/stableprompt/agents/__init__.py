"""Agents that write prompts: RLPrompt's token policy and StablePrompt's instruction agent."""

from stableprompt.agents.instruction_agent import InstructionAgent
from stableprompt.agents.token_policy import TokenPolicy

__all__ = ["InstructionAgent", "TokenPolicy"]
