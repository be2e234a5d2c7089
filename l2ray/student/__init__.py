"""The student model: the offline builder, special reasoning tokens, and URI resolution."""
