"""Reading finished runs and sweeps back: tidy tables (``table``), plots and aggregate statistics."""
