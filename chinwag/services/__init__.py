"""Services: the domain logic between routes and the database, LLM and MCP layers."""
