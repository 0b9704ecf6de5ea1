"""Scale: the device mesh (sharding, multi-process) and the CPU runtime settings."""
