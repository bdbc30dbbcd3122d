"""Thin, typed wrappers over Linux syscalls through ctypes.

The only package that talks to libc; it raises OSError with the path or name and holds no policy.
"""
