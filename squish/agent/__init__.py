"""Agent mode: tools, the workspace sandbox, prompting, the tool-call parser, constrained
decoding and the tool loop. Depends on squish.engine only; see docs/agent.md."""
