"""Training: stage 1 SFT (:mod:`.sft`, TRL), stage 2 multi-turn GRPO on verl (:mod:`.verl`) or on one
machine with TRL (:mod:`.trl_grpo`). Configs shipped in ``training/configs``; recipe in docs/training.md."""
