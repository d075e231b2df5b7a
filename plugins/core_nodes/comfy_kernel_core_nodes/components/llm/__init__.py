"""Decoder-only LLMs used as text encoders (Qwen2.5-VL, Qwen3, Llama 3.1), their tokenizers and Qwen2.5-VL's vision tower."""
