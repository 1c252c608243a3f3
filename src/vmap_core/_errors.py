"""Exceptions shared by the Cython core and the pure-Python reference."""


class VmapExhausted(MemoryError):
    """No free block satisfies the request (the kernel's -ENOMEM / -ERANGE)."""


__all__ = ["VmapExhausted"]
