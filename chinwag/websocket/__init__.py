"""Moving chat events to sockets: wire events, rooms of sockets, the bus, run buffers. Knows nothing of agents."""
