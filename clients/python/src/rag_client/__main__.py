"""`python -m rag_client` = the `rag-client` command."""

from rag_client.cli import app

app(prog_name="rag-client")
