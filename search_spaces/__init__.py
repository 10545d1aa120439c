"""Search spaces and the paper's presets as YAML data (installed as `rhosearch.search_spaces`).

This folder is where people read and edit them; `pyproject.toml` ships it inside the package.
"""
