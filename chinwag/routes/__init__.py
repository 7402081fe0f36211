"""HTTP and WebSocket routes, one router per resource. Routes validate, call one service method, return a schema."""
