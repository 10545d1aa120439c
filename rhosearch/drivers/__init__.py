"""The commands' drivers: they run stages through execution and write the record."""
