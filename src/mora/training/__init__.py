"""The paper's training: self-modulated multi-agent fine-tuning (modulation embeddings + LoRA)."""
