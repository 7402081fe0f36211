"""Wire models (pydantic): what the REST API and WebSocket send and accept. One module per resource."""
