"""Pure core: text in, values out. No CIM, no I/O, no os or ctypes calls."""
