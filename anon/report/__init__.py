"""The evaluation report: its schema, the markdown page, the plots (matplotlib) and figures."""
