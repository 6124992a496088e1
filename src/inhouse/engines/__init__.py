"""Model runtimes behind small Protocols: text in -> vectors (and later prompts -> images, data -> checkpoints)."""
