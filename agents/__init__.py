"""All AutoGen wiring lives in this package: role system messages, the team factory, LLM config,
tool-call validation. A migration to another agent framework touches only this folder."""
