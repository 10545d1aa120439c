"""The search's stages, each an algorithm over configurations (no storage, no Ray)."""
