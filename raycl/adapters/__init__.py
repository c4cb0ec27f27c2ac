"""The few places raycl reaches into a library's private parts, each beside the public API it stands in for."""
