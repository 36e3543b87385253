"""QLoRA fine-tuning: SFT dataset building, training, adapters and training cards (see the QLoRA issue)."""
