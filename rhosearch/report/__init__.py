"""The report: `front` computes what to show (pandas), `html` draws it (Plotly)."""
