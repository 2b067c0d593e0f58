"""The `aisc` command line (Typer + Rich): thin, over the HTTP API or, for set-up, the database."""
