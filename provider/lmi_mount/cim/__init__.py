"""CIM translation: providers translate between CIM and the engine, never decide."""
