"""The Model Context Protocol face of the service: four tools (remember, recall, answer, show_memory) over
the official `mcp` SDK, mounted at `/mcp` (streamable HTTP) or run over stdio by `memalpha mcp`."""
