"""The only layer that touches the machine; every path it uses is injected."""
